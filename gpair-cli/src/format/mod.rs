//! Pure formatting primitives for human and JSON output: tables, `key: value` blocks,
//! RFC 3339 timestamps, sizes, durations and the lowercase names of protocol enums.
//!
//! Nothing here does I/O; the views in [`crate::view`] combine these into the text and JSON of
//! each command, and `lib.rs` decides which of the two is printed.

pub mod table;

use gpair_proto::pb;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use table::Table;

/// `--output`: how results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and `key: value` lines for people.
    Table,
    /// One JSON document (pretty-printed) for scripts.
    Json,
}

/// A command's result in both output forms. Commands build both; `lib.rs` prints the one
/// asked for, so the two can never drift apart in what they contain.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Text for `--output table`, ending in `\n` (or empty).
    pub human: String,
    /// The document for `--output json`.
    pub json: Value,
}

impl Rendered {
    /// The text to print for `format`, ending in `\n`.
    pub fn text(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.human.clone(),
            OutputFormat::Json => {
                // Serializing a `Value` cannot fail: its keys are strings by construction.
                let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
                s.push('\n');
                s
            }
        }
    }
}

/// `key: value` lines with the values aligned, in the given order.
pub fn kv(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let v = printable(v);
        let line = format!("{key:<w$} {v}", w = width + 1);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The text with control characters escaped (`\n`, `\t`, `\u{1b}`), so untrusted strings such
/// as file names and remote error messages stay on one line and cannot drive the terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Milliseconds since the epoch as RFC 3339 UTC with second precision
/// (`2024-05-01T12:00:00Z`); `0` is `never`.
pub fn timestamp(ms: i64) -> String {
    timestamp_or(ms, "never")
}

/// Like [`timestamp`] with a chosen word for `0`.
pub fn timestamp_or(ms: i64, zero: &str) -> String {
    if ms == 0 {
        return zero.to_string();
    }
    let secs = ms.div_euclid(1000);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("invalid time ({ms} ms)"))
}

/// Bytes with binary units: `512 B`, `1.5 KiB`, `12.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Round first, so 1023.96 KiB shows as 1.0 MiB rather than 1024.0 KiB.
    if (value * 10.0).round() / 10.0 >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in seconds as its two largest units: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn duration_secs(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A latency in microseconds: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn latency_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A protocol enum as the lowercase word scripts see: `DIALECT_GATEWAY` → `gateway`.
/// Values this CLI does not know (a newer backend) show as `unknown(N)`.
fn enum_word(name: Option<&str>, prefix: &str, raw: i32) -> String {
    match name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
        None => format!("unknown({raw})"),
    }
}

/// `gateway`, `s3`, `unspecified`.
pub fn dialect(raw: i32) -> String {
    enum_word(
        pb::Dialect::try_from(raw).ok().map(|e| e.as_str_name()),
        "DIALECT_",
        raw,
    )
}

/// `healthy`, `retrying`, `unspecified`.
pub fn health_state(raw: i32) -> String {
    enum_word(
        pb::HealthState::try_from(raw).ok().map(|e| e.as_str_name()),
        "HEALTH_STATE_",
        raw,
    )
}

/// `initial_sync`, `active`, `unbinding`, `unspecified`.
pub fn gpair_state(raw: i32) -> String {
    enum_word(
        pb::GpairState::try_from(raw).ok().map(|e| e.as_str_name()),
        "GPAIR_STATE_",
        raw,
    )
}

/// `ok`, `dns`, `connect`, `auth`, `bucket`, `protocol`, `unspecified`.
pub fn check_stage(raw: i32) -> String {
    enum_word(
        pb::CheckStage::try_from(raw).ok().map(|e| e.as_str_name()),
        "CHECK_STAGE_",
        raw,
    )
}

/// `migrate`, `recall`, `unspecified`.
pub fn job_kind(raw: i32) -> String {
    enum_word(
        pb::JobKind::try_from(raw).ok().map(|e| e.as_str_name()),
        "JOB_KIND_",
        raw,
    )
}

/// `queued`, `running`, `waiting`, `done`, `failed`, `cancelled`, `unspecified`.
pub fn job_state(raw: i32) -> String {
    enum_word(
        pb::JobState::try_from(raw).ok().map(|e| e.as_str_name()),
        "JOB_STATE_",
        raw,
    )
}

/// `done`, `failed`, `skipped`, `noop`, `dirty`, `cancelled`, `unspecified`.
pub fn file_outcome(raw: i32) -> String {
    enum_word(
        pb::FileOutcome::try_from(raw).ok().map(|e| e.as_str_name()),
        "FILE_OUTCOME_",
        raw,
    )
}

/// `local`, `offloading`, `remote`, `recalling`, `dirty`, `conflict`, `unmanaged`,
/// `unspecified`.
pub fn tier_state(raw: i32) -> String {
    enum_word(
        pb::TierState::try_from(raw).ok().map(|e| e.as_str_name()),
        "TIER_STATE_",
        raw,
    )
}

/// A raw path (any bytes) for people: UTF-8 as is, every byte that is not part of valid
/// UTF-8 as `\xNN`. Control characters are left for [`printable`] (tables and `key: value`
/// blocks apply it), so the result is unambiguous enough to find the file with a glob.
pub fn path(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A raw path for JSON's `path` field: UTF-8, with U+FFFD for bytes that are not. The exact
/// bytes travel next to it in `path_b64` ([`base64`]).
pub fn path_lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Standard base64 (RFC 4648, with `=` padding): the exact bytes of a path in JSON, since
/// names need not be UTF-8 and JSON strings must be.
pub fn base64(raw: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
}

/// A transfer rate: `35.0 MiB/s`; `0` is `-` (nothing measured yet).
pub fn rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "-".to_string()
    } else {
        format!("{}/s", bytes(bytes_per_sec))
    }
}

/// A limit where `0` means none: `10.0 GiB` or `none`, through `show` for the other values.
pub fn limit(max: u64, show: impl Fn(u64) -> String) -> String {
    if max == 0 {
        "none".to_string()
    } else {
        show(max)
    }
}

/// A duration between two times in milliseconds, as [`duration_secs`]; negative spans (clock
/// steps) count as zero.
pub fn span_ms(from_ms: i64, to_ms: i64) -> String {
    duration_secs(u64::try_from(to_ms.saturating_sub(from_ms) / 1000).unwrap_or(0))
}

/// `bucket` or `bucket/prefix`.
pub fn remote(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        bucket.to_string()
    } else {
        format!("{bucket}/{prefix}")
    }
}

/// Empty strings as `-` in tables and `key: value` blocks.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_aligns_values() {
        let text = kv(&[
            ("name", "west1".into()),
            ("cluster id", "LC_222".into()),
            ("x", String::new()),
        ]);
        assert_eq!(text, "name:       west1\ncluster id: LC_222\nx:\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(timestamp(0), "never");
        assert_eq!(timestamp_or(0, "-"), "-");
        assert_eq!(timestamp(1_714_564_800_123), "2024-05-01T12:00:00Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            timestamp(i64::MAX),
            format!("invalid time ({} ms)", i64::MAX)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_and_latencies() {
        assert_eq!(duration_secs(0), "0s");
        assert_eq!(duration_secs(45), "45s");
        assert_eq!(duration_secs(192), "3m 12s");
        assert_eq!(duration_secs(2 * 3600 + 5 * 60 + 9), "2h 5m");
        assert_eq!(duration_secs(3 * 86_400 + 4 * 3600 + 1), "3d 4h");
        assert_eq!(latency_us(850), "850 µs");
        assert_eq!(latency_us(12_345), "12.3 ms");
        assert_eq!(latency_us(1_200_000), "1.20 s");
    }

    #[test]
    fn enum_words() {
        assert_eq!(dialect(pb::Dialect::Gateway as i32), "gateway");
        assert_eq!(dialect(pb::Dialect::S3 as i32), "s3");
        assert_eq!(dialect(0), "unspecified");
        assert_eq!(dialect(42), "unknown(42)");
        assert_eq!(health_state(pb::HealthState::Healthy as i32), "healthy");
        assert_eq!(health_state(pb::HealthState::Retrying as i32), "retrying");
        assert_eq!(
            gpair_state(pb::GpairState::InitialSync as i32),
            "initial_sync"
        );
        assert_eq!(gpair_state(pb::GpairState::Unbinding as i32), "unbinding");
        assert_eq!(check_stage(pb::CheckStage::Ok as i32), "ok");
        assert_eq!(check_stage(pb::CheckStage::Auth as i32), "auth");
    }

    #[test]
    fn tiering_enum_words() {
        assert_eq!(job_kind(pb::JobKind::Migrate as i32), "migrate");
        assert_eq!(job_kind(pb::JobKind::Recall as i32), "recall");
        assert_eq!(job_state(pb::JobState::Waiting as i32), "waiting");
        assert_eq!(job_state(pb::JobState::Cancelled as i32), "cancelled");
        assert_eq!(job_state(77), "unknown(77)");
        assert_eq!(file_outcome(pb::FileOutcome::Noop as i32), "noop");
        assert_eq!(file_outcome(pb::FileOutcome::Dirty as i32), "dirty");
        assert_eq!(tier_state(pb::TierState::Offloading as i32), "offloading");
        assert_eq!(tier_state(pb::TierState::Unmanaged as i32), "unmanaged");
    }

    #[test]
    fn byte_paths() {
        assert_eq!(path(b"/srv/caf\xc3\xa9"), "/srv/café");
        assert_eq!(path(b"/srv/\xff\xfe/x"), "/srv/\\xff\\xfe/x");
        assert_eq!(path(b"/a\nb"), "/a\nb");
        assert_eq!(path_lossy(b"/srv/\xff"), "/srv/\u{fffd}");
    }

    #[test]
    fn base64_is_rfc4648() {
        // The test vectors of RFC 4648, section 10.
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc, "{raw:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn rates_limits_spans() {
        assert_eq!(rate(0), "-");
        assert_eq!(rate(35 << 20), "35.0 MiB/s");
        assert_eq!(limit(0, bytes), "none");
        assert_eq!(limit(10 << 30, bytes), "10.0 GiB");
        assert_eq!(limit(5, |n| n.to_string()), "5");
        assert_eq!(span_ms(1_000, 63_999), "1m 2s");
        assert_eq!(span_ms(5_000, 1_000), "0s");
        assert_eq!(span_ms(i64::MIN, i64::MAX), "106751991167d 7h");
    }

    #[test]
    fn printable_escapes_controls_only() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(printable("a\nb\t\u{1b}[31m"), "a\\nb\\t\\u{1b}[31m");
    }

    #[test]
    fn json_text_is_pretty_and_ends_in_newline() {
        let r = Rendered {
            human: "h\n".into(),
            json: serde_json::json!({"a": 1}),
        };
        assert_eq!(r.text(OutputFormat::Table), "h\n");
        assert_eq!(r.text(OutputFormat::Json), "{\n  \"a\": 1\n}\n");
    }
}
