//! The policy scan on its own, for `bench/policy-scan.sh`: walks ROOT judging every file by a
//! policy (not accessed for IDLE_DAYS days, `*.db` excluded) exactly as `gpair policy run
//! --dry-run` does, and prints one JSON line: entries seen, candidates, milliseconds.
//!
//! usage: policy_scan ROOT [IDLE_DAYS [THREADS]]   (THREADS 0 or absent: the daemon's default)

use std::time::Instant;

use gpair_backend::policy::rules::Rules;
use gpair_backend::policy::scan::{scan_with, Options};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: policy_scan ROOT [IDLE_DAYS [THREADS]]");
        return std::process::ExitCode::from(2);
    };
    let days: u64 = match args.next().map(|d| d.parse()) {
        None => 30,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("policy_scan: IDLE_DAYS: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let threads: usize = match args.next().map(|t| t.parse()) {
        None | Some(Ok(0)) => Options::default().threads,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("policy_scan: THREADS: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rules = Rules {
        idle_secs: Some(days * 86_400),
        exclude: vec!["*.db".into()],
        ..Rules::default()
    };
    let compiled = match rules.compile() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("policy_scan: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let started = Instant::now();
    let opts = Options {
        threads,
        ..Options::default()
    };
    let plan = scan_with(
        std::path::Path::new(&root),
        &compiled,
        "user.gpair",
        now,
        &opts,
    );
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{{\"files\": {}, \"dirs\": {}, \"candidates\": {}, \"threads\": {threads}, \"ms\": {ms:.1}}}",
        plan.scanned_files,
        plan.scanned_dirs,
        plan.candidates.len()
    );
    std::process::ExitCode::SUCCESS
}
