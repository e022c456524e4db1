//! The progress display while waiting for a job (`--wait`, `gpair job watch`).
//!
//! This is the one place that writes while a command runs, and it writes to stderr only, so
//! stdout keeps exactly the result (`lib.rs` prints it at the end) and `--output json` stays
//! one document. On a terminal the display is a single line redrawn in place; anywhere else
//! (a log, a pipe) it is a plain line at most every [`PLAIN_EVERY`], the latest state winning.
//! The lines themselves come from [`crate::view::job`]; this module only decides when and how
//! they are written, and never fails a command: a stderr that cannot be written to is ignored.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use gpair_proto::pb;

use crate::view;

/// The shortest gap between two plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Terminal width when `COLUMNS` does not say.
const DEFAULT_WIDTH: usize = 80;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: one line, redrawn in place, at most `width - 1` characters.
    Live {
        /// The terminal's width in columns.
        width: usize,
    },
    /// Not a terminal: a full line per update, at most one per `every`.
    Plain {
        /// The shortest gap between two lines.
        every: Duration,
    },
}

/// The progress display of one job.
#[derive(Debug)]
pub struct Progress<W: Write> {
    out: W,
    mode: Mode,
    /// When the last plain line was written.
    shown_at: Option<Instant>,
    /// A state not written yet because the last plain line is too recent.
    pending: Option<pb::Job>,
    /// Whether a live line is on screen (and must be cleared before anything else).
    drawn: bool,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr: live if it is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        let err = std::io::stderr();
        let mode = if err.is_terminal() {
            Mode::Live {
                width: terminal_width(std::env::var("COLUMNS").ok().as_deref()),
            }
        } else {
            Mode::Plain { every: PLAIN_EVERY }
        };
        Progress::new(err, mode)
    }
}

/// The terminal's width from `COLUMNS`, else [`DEFAULT_WIDTH`]. (A shell sets `COLUMNS` but
/// rarely exports it; a too-narrow guess only cuts the line short, it never breaks it.)
pub fn terminal_width(columns: Option<&str>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| (20..=1000).contains(&w))
        .unwrap_or(DEFAULT_WIDTH)
}

impl<W: Write> Progress<W> {
    /// A display writing to `out`.
    pub fn new(out: W, mode: Mode) -> Self {
        Progress {
            out,
            mode,
            shown_at: None,
            pending: None,
            drawn: false,
        }
    }

    /// Says which job is being waited for, once, before the first update. A plain line
    /// carries the id itself, so only the live display needs this.
    pub fn start(&mut self, id: u64) {
        if let Mode::Live { .. } = self.mode {
            let _ = writeln!(
                self.out,
                "waiting for job {id} (Ctrl-C stops waiting; the job goes on)"
            );
            let _ = self.out.flush();
        }
    }

    /// A new state of the job.
    pub fn update(&mut self, job: &pb::Job, now: Instant) {
        match self.mode {
            Mode::Live { width } => {
                let _ = write!(self.out, "\r\x1b[K{}", view::job::progress_bar(job, width));
                let _ = self.out.flush();
                self.drawn = true;
            }
            Mode::Plain { every } => {
                let due = self
                    .shown_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= every);
                if due {
                    self.plain_line(job, now);
                } else {
                    self.pending = Some(job.clone());
                }
            }
        }
    }

    /// When [`Progress::tick`] has a held-back state to write; `None` when there is none.
    pub fn next_due(&self) -> Option<Instant> {
        match (self.mode, &self.pending, self.shown_at) {
            (Mode::Plain { every }, Some(_), Some(t)) => Some(t + every),
            _ => None,
        }
    }

    /// Writes the held-back state if its time has come, so a job that goes quiet (waiting
    /// for a gpeer) still shows its latest state.
    pub fn tick(&mut self, now: Instant) {
        if self.next_due().is_some_and(|due| now >= due) {
            if let Some(job) = self.pending.take() {
                self.plain_line(&job, now);
            }
        }
    }

    fn plain_line(&mut self, job: &pb::Job, now: Instant) {
        let _ = writeln!(self.out, "{}", view::job::progress_plain(job));
        let _ = self.out.flush();
        self.shown_at = Some(now);
        self.pending = None;
    }

    /// Ends the display: the live line is cleared, so the report or an error line that
    /// follows starts on a clean line.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(self.out, "\r\x1b[K");
            let _ = self.out.flush();
            self.drawn = false;
        }
        self.pending = None;
    }

    /// The writer (for tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(done: u64) -> pb::Job {
        pb::Job {
            id: 7,
            state: pb::JobState::Running as i32,
            files_total: 10,
            files_done: done,
            ..Default::default()
        }
    }

    fn text(p: Progress<Vec<u8>>) -> String {
        String::from_utf8_lossy(&p.into_inner()).into_owned()
    }

    #[test]
    fn plain_lines_at_most_every_two_seconds_latest_wins() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Plain { every: PLAIN_EVERY });
        p.start(7);
        p.update(&job(1), t0);
        assert_eq!(p.next_due(), None);
        p.update(&job(2), t0 + Duration::from_millis(500));
        p.update(&job(3), t0 + Duration::from_millis(900));
        assert_eq!(p.next_due(), Some(t0 + PLAIN_EVERY));
        p.tick(t0 + Duration::from_millis(1_999));
        p.tick(t0 + PLAIN_EVERY);
        assert_eq!(p.next_due(), None);
        p.update(&job(4), t0 + Duration::from_millis(4_500));
        p.update(&job(5), t0 + Duration::from_millis(4_600));
        p.finish();
        assert_eq!(p.next_due(), None);
        assert_eq!(
            text(p),
            "job 7: running, 1/10 files, 0 failed, 0/0 B\n\
             job 7: running, 3/10 files, 0 failed, 0/0 B\n\
             job 7: running, 4/10 files, 0 failed, 0/0 B\n"
        );
    }

    #[test]
    fn live_line_is_redrawn_in_place_and_cleared() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Live { width: 40 });
        p.start(7);
        p.update(&job(1), t0);
        p.update(&job(2), t0);
        assert_eq!(p.next_due(), None);
        p.finish();
        assert_eq!(
            text(p),
            "waiting for job 7 (Ctrl-C stops waiting; the job goes on)\n\
             \r\x1b[K[#---------] 1/10 files, 0 failed, 0/0…\
             \r\x1b[K[##--------] 2/10 files, 0 failed, 0/0…\
             \r\x1b[K"
        );
    }

    #[test]
    fn width_from_columns() {
        assert_eq!(terminal_width(None), 80);
        assert_eq!(terminal_width(Some("132")), 132);
        assert_eq!(terminal_width(Some(" 100\n")), 100);
        assert_eq!(terminal_width(Some("5")), 80);
        assert_eq!(terminal_width(Some("wide")), 80);
    }
}
