//! `gateway-bench`: an S3 load generator used to compare `s3fs-gateway` with `s3s-fs`.
//!
//! `gateway-bench run` drives one S3 endpoint through a fixed list of phases (small-object PUT
//! and GET at several sizes and concurrencies, large-object PUT, multipart PUT, plain GET and
//! ranged GET) and prints one JSON line per phase. With `--server-pid` it samples the server's
//! CPU time (`utime + stime` from `/proc/<pid>/stat`) and peak RSS around every phase.
//!
//! `gateway-bench report` reads the JSON lines of several servers and rounds and prints a table
//! of medians with the ratio candidate/baseline for every metric, plus the goals (PASS/MISS).
//!
//! `bench/gateway.sh` runs both servers and both subcommands; see `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: f64 = (1024 * MIB) as f64;

#[derive(Parser, Debug)]
#[command(
    name = "gateway-bench",
    about = "S3 load generator: s3fs-gateway vs s3s-fs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run all phases against one endpoint and print one JSON line per phase.
    Run(Box<RunArgs>),
    /// Summarize JSON lines from `run` into a table of medians and ratios.
    Report(ReportArgs),
    /// Print a free TCP port on 127.0.0.1 (for servers that cannot bind port 0).
    FreePort,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Checksums {
    /// No CRC on requests or responses unless the operation requires one.
    WhenRequired,
    /// The SDK default: CRC32 on uploads, validation of response checksums.
    WhenSupported,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    SmallPut,
    SmallGet,
    LargePut,
    LargeMpuPut,
    LargeGet,
    LargeGetRanged,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:9000
    #[arg(long)]
    endpoint: String,
    #[arg(long, env = "BENCH_ACCESS_KEY")]
    access_key: String,
    #[arg(long, env = "BENCH_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Bucket to use (created if missing).
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// PID of the server process, for CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label of the server in the output (e.g. `ours`, `ours-fsync`, `s3s-fs`).
    #[arg(long, default_value = "server")]
    server: String,
    /// Round number, copied to the output.
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Small object sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "4096,65536")]
    sizes: Vec<u64>,
    /// Concurrency levels for small objects (in-flight requests).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Duration of every small-object phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    small_secs: f64,
    /// Distinct keys per small size and concurrency (PUTs cycle over them, overwriting).
    #[arg(long, default_value_t = 2000)]
    small_keys: u64,
    /// Size of the large object in MiB.
    #[arg(long, default_value_t = 256)]
    large_mib: u64,
    /// Minimum duration of every large-object phase, in seconds (the object is transferred
    /// again until this much time has passed).
    #[arg(long, default_value_t = 4.0)]
    large_secs: f64,
    /// Minimum number of transfers in every large-object phase.
    #[arg(long, default_value_t = 2)]
    large_min_iters: u64,
    /// Part size of the multipart PUT, in MiB.
    #[arg(long, default_value_t = 16)]
    part_mib: u64,
    /// Range size of the ranged GET, in MiB.
    #[arg(long, default_value_t = 16)]
    range_mib: u64,
    /// Parts or ranges in flight for the multipart PUT and the ranged GET.
    #[arg(long, default_value_t = 4)]
    stream_concurrency: usize,
    /// Request/response checksum policy of the client.
    #[arg(long, value_enum, default_value_t = Checksums::WhenRequired)]
    checksums: Checksums,
    /// Send `x-amz-content-sha256: UNSIGNED-PAYLOAD` instead of signing the body.
    #[arg(long)]
    unsigned_payload: bool,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Do not call sync(2) between phases.
    #[arg(long)]
    no_sync: bool,
    /// Phases to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Vec<Phase>,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// JSON-lines files written by `run`.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Server label the ratios are computed against.
    #[arg(long, default_value = "s3s-fs")]
    baseline: String,
    /// Server label the goals are checked for.
    #[arg(long, default_value = "ours")]
    candidate: String,
    /// Further server labels shown as extra columns (with their ratio to the baseline).
    #[arg(long, value_delimiter = ',', default_value = "ours-fsync")]
    extra: Vec<String>,
}

/// One measurement: one phase against one server in one round.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Record {
    server: String,
    round: u32,
    phase: String,
    /// Object size in bytes.
    size: u64,
    /// In-flight requests (for the large phases: 1 object at a time; see `stream_concurrency`).
    concurrency: usize,
    stream_concurrency: usize,
    /// Successful operations (for large phases: whole-object transfers).
    ops: u64,
    errors: u64,
    /// Payload bytes moved by successful operations.
    bytes: u64,
    secs: f64,
    ops_per_s: f64,
    mib_per_s: f64,
    lat_p50_ms: f64,
    lat_p99_ms: f64,
    lat_max_ms: f64,
    server_cpu_s: Option<f64>,
    server_cpu_s_per_gib: Option<f64>,
    server_cpu_us_per_op: Option<f64>,
    /// MiB moved per second of server CPU time (higher is better).
    mib_per_server_cpu_s: Option<f64>,
    /// Share of one core the server used during the phase.
    server_cores: Option<f64>,
    client_cpu_s: f64,
    server_rss_kib: Option<u64>,
    server_rss_hwm_kib: Option<u64>,
    checksums: String,
    unsigned_payload: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.client_threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(run(*args))
        }
        Cmd::Report(args) => report(&args),
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a whole process (all threads, live and exited), in seconds.
fn proc_cpu_s(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields
        .get(11)
        .ok_or_else(|| anyhow!("malformed {path}"))?
        .parse()?;
    let stime: u64 = fields
        .get(12)
        .ok_or_else(|| anyhow!("malformed {path}"))?
        .parse()?;
    Ok((utime + stime) as f64 / clock_ticks_per_s())
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Running phases

struct Ctx {
    client: Client,
    args: RunArgs,
    /// Random bytes: the large object, and the source of every small object.
    data: Bytes,
    out: Option<std::fs::File>,
}

/// What a phase measured, before CPU accounting.
struct Outcome {
    lat_ns: Vec<u64>,
    ops: u64,
    errors: u64,
    bytes: u64,
    elapsed: Duration,
    per_worker_ops: Vec<u64>,
    first_error: Option<String>,
}

/// Runs `op(worker, iteration)` on `conc` workers until `dur` has passed and at least `min_ops`
/// operations succeeded in total. `op` returns the payload bytes it moved.
async fn drive<F, Fut>(conc: usize, dur: Duration, min_ops: u64, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64>> + Send + 'static,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(conc);
    for w in 0..conc {
        let op = Arc::clone(&op);
        let done = Arc::clone(&done);
        let failed = Arc::clone(&failed);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            let mut ops = 0u64;
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            loop {
                if start.elapsed() >= dur && done.load(Ordering::Relaxed) >= min_ops {
                    break;
                }
                // Give up on a phase that only fails.
                if failed.load(Ordering::Relaxed) > 100 && done.load(Ordering::Relaxed) == 0 {
                    break;
                }
                let t = Instant::now();
                match op(w, i).await {
                    Ok(n) => {
                        lat.push(t.elapsed().as_nanos() as u64);
                        bytes += n;
                        ops += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                    }
                }
                i += 1;
            }
            (lat, bytes, ops, errors, first_error)
        }));
    }
    let mut out = Outcome {
        lat_ns: Vec::new(),
        ops: 0,
        errors: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        per_worker_ops: Vec::with_capacity(conc),
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok((lat, bytes, ops, errors, first_error)) => {
                out.lat_ns.extend(lat);
                out.bytes += bytes;
                out.ops += ops;
                out.errors += errors;
                out.per_worker_ops.push(ops);
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.per_worker_ops.push(0);
                out.first_error
                    .get_or_insert_with(|| format!("worker panicked: {e}"));
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let idx = ((p * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1e6
}

/// CPU and memory snapshot taken when a phase starts.
struct Meter {
    server_cpu: Option<f64>,
    client_cpu: f64,
}

impl Ctx {
    fn pid(&self) -> Option<String> {
        self.args.server_pid.map(|p| p.to_string())
    }

    fn meter(&self) -> Result<Meter> {
        let server_cpu = match self.pid() {
            Some(p) => Some(proc_cpu_s(&p)?),
            None => None,
        };
        Ok(Meter {
            server_cpu,
            client_cpu: proc_cpu_s("self")?,
        })
    }

    fn emit(
        &mut self,
        phase: &str,
        size: u64,
        conc: usize,
        m: &Meter,
        o: &Outcome,
    ) -> Result<Record> {
        let pid = self.pid();
        let server_cpu_now = match &pid {
            Some(p) => Some(proc_cpu_s(p)?),
            None => None,
        };
        let client_cpu = proc_cpu_s("self")? - m.client_cpu;
        let server_cpu_s = match (server_cpu_now, m.server_cpu) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        let mut lat = o.lat_ns.clone();
        lat.sort_unstable();
        let secs = o.elapsed.as_secs_f64();
        let mib = o.bytes as f64 / MIB as f64;
        let rec = Record {
            server: self.args.server.clone(),
            round: self.args.round,
            phase: phase.to_string(),
            size,
            concurrency: conc,
            stream_concurrency: self.args.stream_concurrency,
            ops: o.ops,
            errors: o.errors,
            bytes: o.bytes,
            secs,
            ops_per_s: o.ops as f64 / secs,
            mib_per_s: mib / secs,
            lat_p50_ms: percentile_ms(&lat, 0.50),
            lat_p99_ms: percentile_ms(&lat, 0.99),
            lat_max_ms: percentile_ms(&lat, 1.0),
            server_cpu_s,
            server_cpu_s_per_gib: server_cpu_s
                .filter(|_| o.bytes > 0)
                .map(|c| c / (o.bytes as f64 / GIB)),
            server_cpu_us_per_op: server_cpu_s
                .filter(|_| o.ops > 0)
                .map(|c| c * 1e6 / o.ops as f64),
            mib_per_server_cpu_s: server_cpu_s.filter(|c| *c > 0.0).map(|c| mib / c),
            server_cores: server_cpu_s.map(|c| c / secs),
            client_cpu_s: client_cpu,
            server_rss_kib: pid.as_deref().and_then(|p| proc_status_kib(p, "VmRSS")),
            server_rss_hwm_kib: pid.as_deref().and_then(|p| proc_status_kib(p, "VmHWM")),
            checksums: format!("{:?}", self.args.checksums),
            unsigned_payload: self.args.unsigned_payload,
        };
        let line = serde_json::to_string(&rec)?;
        println!("{line}");
        if let Some(f) = self.out.as_mut() {
            writeln!(f, "{line}")?;
        }
        eprintln!(
            "[{} r{}] {phase:<16} size={:<10} c={:<3} ops={:<7} {:>9.1} ops/s {:>8.1} MiB/s p50={:.3}ms \
             p99={:.3}ms server_cpu={} errors={}",
            rec.server,
            rec.round,
            size,
            conc,
            rec.ops,
            rec.ops_per_s,
            rec.mib_per_s,
            rec.lat_p50_ms,
            rec.lat_p99_ms,
            rec.server_cpu_s.map_or("-".to_string(), |c| format!("{c:.2}s")),
            rec.errors,
        );
        if let Some(e) = &o.first_error {
            eprintln!("  first error: {e}");
        }
        if o.ops == 0 {
            bail!("phase {phase} (size {size}, concurrency {conc}) had no successful operation");
        }
        Ok(rec)
    }

    fn settle(&self) {
        if !self.args.no_sync {
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
        }
    }
}

/// A deterministic offset into the data buffer so that small objects differ from each other.
fn small_offset(worker: usize, k: u64) -> usize {
    (((worker as u64 * 131 + k) * 4099) % 65536) as usize
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

async fn run(args: RunArgs) -> Result<()> {
    let creds =
        aws_credential_types::Credentials::from_keys(&args.access_key, &args.secret_key, None);
    let (req_ck, resp_ck) = match args.checksums {
        Checksums::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
        Checksums::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
    };
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&args.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(req_ck)
        .response_checksum_validation(resp_ck)
        // Errors must show up as errors, not as slow operations.
        .retry_config(RetryConfig::disabled())
        // An fsync of a large object may legitimately take seconds after the body was sent.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    let client = Client::from_conf(conf);

    let phases: Vec<Phase> = if args.phases.is_empty() {
        vec![
            Phase::SmallPut,
            Phase::SmallGet,
            Phase::LargePut,
            Phase::LargeMpuPut,
            Phase::LargeGet,
            Phase::LargeGetRanged,
        ]
    } else {
        args.phases.clone()
    };
    let max_small = args.sizes.iter().copied().max().unwrap_or(0);
    let data_len = (args.large_mib * MIB).max(max_small + 65536) as usize;
    let mut data = vec![0u8; data_len];
    rand::rngs::StdRng::seed_from_u64(0x6761_7465_7761_7921).fill_bytes(&mut data);
    let out = match &args.out {
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let mut ctx = Ctx {
        client,
        args,
        data: Bytes::from(data),
        out,
    };

    // The bucket may exist already (a second run against the same server).
    if let Err(e) = ctx
        .client
        .create_bucket()
        .bucket(&ctx.args.bucket)
        .send()
        .await
    {
        let exists = ctx
            .client
            .head_bucket()
            .bucket(&ctx.args.bucket)
            .send()
            .await
            .is_ok();
        if !exists {
            bail!(
                "CreateBucket {}: {}",
                ctx.args.bucket,
                DisplayErrorContext(e)
            );
        }
    }

    // ---- small objects
    let sizes = ctx.args.sizes.clone();
    let concs = ctx.args.concurrency.clone();
    let small_dur = Duration::from_secs_f64(ctx.args.small_secs);
    for &size in &sizes {
        // (key, offset into data) of every small object written at this size.
        let mut written: Vec<(String, usize)> = Vec::new();
        let ctx_arc_data = ctx.data.clone();
        if phases.contains(&Phase::SmallPut) || phases.contains(&Phase::SmallGet) {
            for &conc in &concs {
                let per_worker = (ctx.args.small_keys / conc as u64).max(1);
                let shared = Arc::new(Shared {
                    client: ctx.client.clone(),
                    bucket: ctx.args.bucket.clone(),
                    unsigned: ctx.args.unsigned_payload,
                    data: ctx_arc_data.clone(),
                });
                let measured = phases.contains(&Phase::SmallPut);
                ctx.settle();
                let m = ctx.meter()?;
                let s = Arc::clone(&shared);
                // Unmeasured PUT (only to have data for GET): one pass over the keys.
                let (dur, min_ops) = if measured {
                    (small_dur, 1)
                } else {
                    (Duration::ZERO, per_worker * conc as u64)
                };
                let o = drive(conc, dur, min_ops, move |w, i| {
                    let s = Arc::clone(&s);
                    async move {
                        let k = i % per_worker;
                        let key = format!("small/{size}/c{conc}-w{w}/{k}");
                        let off = small_offset(w, k);
                        s.put(&key, s.data.slice(off..off + size as usize)).await?;
                        Ok(size)
                    }
                })
                .await;
                for (w, &n) in o.per_worker_ops.iter().enumerate() {
                    for k in 0..n.min(per_worker) {
                        written
                            .push((format!("small/{size}/c{conc}-w{w}/{k}"), small_offset(w, k)));
                    }
                }
                if measured {
                    ctx.emit("small_put", size, conc, &m, &o)?;
                } else if o.ops == 0 {
                    bail!(
                        "could not PUT small objects: {}",
                        o.first_error.unwrap_or_default()
                    );
                }
            }
        }
        if phases.contains(&Phase::SmallGet) {
            let written = Arc::new(written);
            for &conc in &concs {
                let ctx2 = Arc::new(Shared {
                    client: ctx.client.clone(),
                    bucket: ctx.args.bucket.clone(),
                    unsigned: ctx.args.unsigned_payload,
                    data: ctx.data.clone(),
                });
                ctx.settle();
                let m = ctx.meter()?;
                let written = Arc::clone(&written);
                let o = drive(conc, small_dur, 1, move |w, i| {
                    let s = Arc::clone(&ctx2);
                    let written = Arc::clone(&written);
                    async move {
                        let idx = (mix(((w as u64) << 40) ^ i) % written.len() as u64) as usize;
                        let (key, off) = &written[idx];
                        let expected = s.data.slice(*off..*off + size as usize);
                        s.get_verify(key, None, &expected).await
                    }
                })
                .await;
                ctx.emit("small_get", size, conc, &m, &o)?;
            }
        }
    }

    // ---- large object
    let large = ctx.data.slice(0..(ctx.args.large_mib * MIB) as usize);
    let large_size = large.len() as u64;
    let large_dur = Duration::from_secs_f64(ctx.args.large_secs);
    let min_iters = ctx.args.large_min_iters.max(1);
    let single_key = "large/single".to_string();
    let mpu_key = "large/mpu".to_string();
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        bucket: ctx.args.bucket.clone(),
        unsigned: ctx.args.unsigned_payload,
        data: large.clone(),
    });

    if phases.contains(&Phase::LargePut) {
        ctx.settle();
        let m = ctx.meter()?;
        let s = Arc::clone(&shared);
        let key = single_key.clone();
        let o = drive(1, large_dur, min_iters, move |_, _| {
            let s = Arc::clone(&s);
            let key = key.clone();
            async move {
                s.put(&key, s.data.clone()).await?;
                Ok(s.data.len() as u64)
            }
        })
        .await;
        ctx.emit("large_put", large_size, 1, &m, &o)?;
    }

    if phases.contains(&Phase::LargeMpuPut) {
        ctx.settle();
        let m = ctx.meter()?;
        let s = Arc::clone(&shared);
        let key = mpu_key.clone();
        let part = (ctx.args.part_mib * MIB) as usize;
        let sc = ctx.args.stream_concurrency.max(1);
        let o = drive(1, large_dur, min_iters, move |_, _| {
            let s = Arc::clone(&s);
            let key = key.clone();
            async move { s.multipart_put(&key, part, sc).await }
        })
        .await;
        ctx.emit("large_mpu_put", large_size, 1, &m, &o)?;
    }

    let need_get = phases.contains(&Phase::LargeGet) || phases.contains(&Phase::LargeGetRanged);
    if need_get && !phases.contains(&Phase::LargePut) {
        shared.put(&single_key, large.clone()).await?;
    }

    if phases.contains(&Phase::LargeGet) {
        ctx.settle();
        let m = ctx.meter()?;
        let s = Arc::clone(&shared);
        let key = single_key.clone();
        let o = drive(1, large_dur, min_iters, move |_, _| {
            let s = Arc::clone(&s);
            let key = key.clone();
            async move { s.get_verify(&key, None, &s.data).await }
        })
        .await;
        ctx.emit("large_get", large_size, 1, &m, &o)?;
    }

    if phases.contains(&Phase::LargeGetRanged) {
        ctx.settle();
        let m = ctx.meter()?;
        let s = Arc::clone(&shared);
        let key = single_key.clone();
        let range = (ctx.args.range_mib * MIB).max(1);
        let sc = ctx.args.stream_concurrency.max(1);
        let o = drive(1, large_dur, min_iters, move |_, _| {
            let s = Arc::clone(&s);
            let key = key.clone();
            async move { s.ranged_get(&key, range, sc).await }
        })
        .await;
        ctx.emit("large_get_ranged", large_size, 1, &m, &o)?;
    }

    Ok(())
}

/// The part of the context that worker tasks need (cheap to share).
struct Shared {
    client: Client,
    bucket: String,
    unsigned: bool,
    data: Bytes,
}

impl Shared {
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let op = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .customize();
        let op = if self.unsigned {
            op.disable_payload_signing()
        } else {
            op
        };
        op.send()
            .await
            .map_err(|e| anyhow!("PUT {key}: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn get_verify(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        expected: &[u8],
    ) -> Result<u64> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((s, e)) = range {
            req = req.range(format!("bytes={s}-{}", e - 1));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("GET {key}: {}", DisplayErrorContext(e)))?;
        let mut body = resp.body;
        let mut pos = 0usize;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| anyhow!("GET {key} body: {}", DisplayErrorContext(e)))?
        {
            let end = pos + chunk.len();
            if end > expected.len() || chunk[..] != expected[pos..end] {
                bail!("GET {key}: body differs from what was PUT at offset {pos}");
            }
            pos = end;
        }
        if pos != expected.len() {
            bail!("GET {key}: got {pos} bytes, expected {}", expected.len());
        }
        Ok(pos as u64)
    }

    /// Downloads the whole object in `range`-byte pieces, `sc` at a time, and checks them.
    async fn ranged_get(&self, key: &str, range: u64, sc: usize) -> Result<u64> {
        let len = self.data.len() as u64;
        let ranges: Vec<(u64, u64)> = (0..len.div_ceil(range))
            .map(|i| (i * range, ((i + 1) * range).min(len)))
            .collect();
        futures::stream::iter(ranges)
            .map(|(s, e)| async move {
                self.get_verify(key, Some((s, e)), &self.data[s as usize..e as usize])
                    .await
            })
            .buffer_unordered(sc)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await
    }

    /// Uploads the data as a multipart upload with `part`-byte parts, `sc` at a time.
    async fn multipart_put(&self, key: &str, part: usize, sc: usize) -> Result<u64> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| anyhow!("CreateMultipartUpload {key}: {}", DisplayErrorContext(e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| anyhow!("CreateMultipartUpload {key}: no upload id"))?
            .to_string();
        let n_parts = self.data.len().div_ceil(part.max(1));
        let uid = upload_id.as_str();
        let result: Result<Vec<CompletedPart>> = futures::stream::iter(0..n_parts)
            .map(|i| async move {
                let body = self
                    .data
                    .slice(i * part..((i + 1) * part).min(self.data.len()));
                let number = i as i32 + 1;
                let op = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(uid)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .customize();
                let op = if self.unsigned {
                    op.disable_payload_signing()
                } else {
                    op
                };
                let resp = op.send().await.map_err(|e| {
                    anyhow!("UploadPart {key} #{number}: {}", DisplayErrorContext(e))
                })?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(resp.e_tag().map(str::to_string))
                    .build())
            })
            .buffer_unordered(sc)
            .try_collect()
            .await;
        let mut parts = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(uid)
                    .send()
                    .await;
                return Err(e);
            }
        };
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(uid)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| anyhow!("CompleteMultipartUpload {key}: {}", DisplayErrorContext(e)))?;
        Ok(self.data.len() as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Report

/// One row of the table: which records, which field, and which direction is better.
struct MetricDef {
    phase: &'static str,
    field: &'static str,
    label: &'static str,
    higher_is_better: bool,
    /// Only for this concurrency (None: every concurrency present).
    only_conc: Option<usize>,
}

const METRICS: &[MetricDef] = &[
    MetricDef {
        phase: "small_put",
        field: "ops_per_s",
        label: "ops/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "small_put",
        field: "lat_p50_ms",
        label: "p50 ms",
        higher_is_better: false,
        only_conc: Some(1),
    },
    MetricDef {
        phase: "small_put",
        field: "server_cpu_us_per_op",
        label: "server CPU µs/op",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "small_get",
        field: "ops_per_s",
        label: "ops/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "small_get",
        field: "lat_p50_ms",
        label: "p50 ms",
        higher_is_better: false,
        only_conc: Some(1),
    },
    MetricDef {
        phase: "small_get",
        field: "lat_p99_ms",
        label: "p99 ms",
        higher_is_better: false,
        only_conc: Some(1),
    },
    MetricDef {
        phase: "small_get",
        field: "server_cpu_us_per_op",
        label: "server CPU µs/op",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "large_put",
        field: "mib_per_s",
        label: "MiB/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "large_put",
        field: "server_cpu_s_per_gib",
        label: "server CPU-s/GiB",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "large_mpu_put",
        field: "mib_per_s",
        label: "MiB/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "large_mpu_put",
        field: "server_cpu_s_per_gib",
        label: "server CPU-s/GiB",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get",
        field: "mib_per_s",
        label: "MiB/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get",
        field: "server_cpu_s_per_gib",
        label: "server CPU-s/GiB",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get",
        field: "mib_per_server_cpu_s",
        label: "MiB per server CPU-s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get_ranged",
        field: "mib_per_s",
        label: "MiB/s",
        higher_is_better: true,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get_ranged",
        field: "server_cpu_s_per_gib",
        label: "server CPU-s/GiB",
        higher_is_better: false,
        only_conc: None,
    },
    MetricDef {
        phase: "large_get_ranged",
        field: "mib_per_server_cpu_s",
        label: "MiB per server CPU-s",
        higher_is_better: true,
        only_conc: None,
    },
];

fn field(r: &Record, name: &str) -> Option<f64> {
    match name {
        "ops_per_s" => Some(r.ops_per_s),
        "mib_per_s" => Some(r.mib_per_s),
        "lat_p50_ms" => Some(r.lat_p50_ms),
        "lat_p99_ms" => Some(r.lat_p99_ms),
        "server_cpu_us_per_op" => r.server_cpu_us_per_op,
        "server_cpu_s_per_gib" => r.server_cpu_s_per_gib,
        "mib_per_server_cpu_s" => r.mib_per_server_cpu_s,
        _ => None,
    }
}

/// Median and half the min-max spread relative to the median (in %).
fn median_spread(mut v: Vec<f64>) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let spread = if med != 0.0 {
        (v[n - 1] - v[0]) / 2.0 / med.abs() * 100.0
    } else {
        0.0
    };
    Some((med, spread))
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_size(b: u64) -> String {
    if b >= MIB && b % MIB == 0 {
        format!("{} MiB", b / MIB)
    } else if b >= KIB && b % KIB == 0 {
        format!("{} KiB", b / KIB)
    } else {
        format!("{b} B")
    }
}

fn report(args: &ReportArgs) -> Result<()> {
    let mut records = Vec::new();
    for p in &args.inputs {
        let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let r: Record = serde_json::from_str(&line).with_context(|| {
                format!("{}:{}: not a gateway-bench record", p.display(), n + 1)
            })?;
            records.push(r);
        }
    }
    if records.is_empty() {
        bail!("no records");
    }

    // Distinct (phase, size, concurrency) in first-seen order.
    let mut groups: Vec<(String, u64, usize)> = Vec::new();
    for r in &records {
        let g = (r.phase.clone(), r.size, r.concurrency);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut servers = vec![args.baseline.clone(), args.candidate.clone()];
    servers.extend(args.extra.iter().filter(|s| !s.is_empty()).cloned());
    servers.dedup();

    let values = |server: &str, g: &(String, u64, usize), fld: &str| -> Vec<f64> {
        records
            .iter()
            .filter(|r| {
                r.server == server && r.phase == g.0 && r.size == g.1 && r.concurrency == g.2
            })
            .filter_map(|r| field(r, fld))
            .collect()
    };
    let med =
        |server: &str, g: &(String, u64, usize), fld: &str| median_spread(values(server, g, fld));

    let mut rounds: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for r in &records {
        rounds.entry(r.server.as_str()).or_default().insert(r.round);
    }
    println!();
    print!("rounds:");
    for s in &servers {
        print!(" {s}={}", rounds.get(s.as_str()).map_or(0, |r| r.len()));
    }
    println!("   (value = median over rounds, ±x% = half the min-max spread)");
    let errors: u64 = records.iter().map(|r| r.errors).sum();
    if errors > 0 {
        println!(
            "WARNING: {errors} failed operations in the input (see `errors` in the JSON lines)"
        );
    }
    println!();

    // Header.
    let mut header = vec!["metric".to_string(), "better".to_string()];
    header.push(args.baseline.clone());
    header.push(args.candidate.clone());
    header.push(format!("{}/{}", args.candidate, args.baseline));
    for e in servers.iter().skip(2) {
        header.push(e.clone());
        header.push(format!("{e}/{}", args.baseline));
    }
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));

    for g in &groups {
        for m in METRICS.iter().filter(|m| m.phase == g.0) {
            if m.only_conc.is_some_and(|c| c != g.2) {
                continue;
            }
            let base = med(&args.baseline, g, m.field);
            let cand = med(&args.candidate, g, m.field);
            if base.is_none() && cand.is_none() {
                continue;
            }
            let name = if g.0.starts_with("small") {
                format!("{} {} c{} {}", g.0, fmt_size(g.1), g.2, m.label)
            } else {
                format!("{} {} {}", g.0, fmt_size(g.1), m.label)
            };
            let cell = |v: Option<(f64, f64)>| {
                v.map_or("-".to_string(), |(x, s)| {
                    format!("{} ±{:.0}%", fmt_num(x), s)
                })
            };
            let ratio = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
                (Some((a, _)), Some((b, _))) if b != 0.0 => format!("{:.2}", a / b),
                _ => "-".to_string(),
            };
            let mut row = vec![
                name,
                if m.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
                .to_string(),
                cell(base),
                cell(cand),
                ratio(cand, base),
            ];
            for e in servers.iter().skip(2) {
                let v = med(e, g, m.field);
                row.push(cell(v));
                row.push(ratio(v, base));
            }
            println!("| {} |", row.join(" | "));
        }
    }
    // Peak RSS per server over the whole run (median over rounds of each round's maximum).
    let mut row = vec!["server peak RSS MiB".to_string(), "lower".to_string()];
    let peak = |server: &str| -> Option<(f64, f64)> {
        let mut per_round: BTreeMap<u32, u64> = BTreeMap::new();
        for r in records.iter().filter(|r| r.server == server) {
            if let Some(h) = r.server_rss_hwm_kib {
                let e = per_round.entry(r.round).or_default();
                *e = (*e).max(h);
            }
        }
        median_spread(per_round.values().map(|k| *k as f64 / 1024.0).collect())
    };
    let base = peak(&args.baseline);
    let cand = peak(&args.candidate);
    let cell = |v: Option<(f64, f64)>| {
        v.map_or("-".to_string(), |(x, s)| {
            format!("{} ±{:.0}%", fmt_num(x), s)
        })
    };
    let ratio = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some((a, _)), Some((b, _))) if b != 0.0 => format!("{:.2}", a / b),
        _ => "-".to_string(),
    };
    row.extend([cell(base), cell(cand), ratio(cand, base)]);
    for e in servers.iter().skip(2) {
        let v = peak(e);
        row.push(cell(v));
        row.push(ratio(v, base));
    }
    println!("| {} |", row.join(" | "));

    // Goals.
    println!();
    println!("goals ({}):", args.candidate);
    for g in groups.iter().filter(|g| g.0 == "small_get" && g.2 == 1) {
        if let Some((p50, _)) = med(&args.candidate, g, "lat_p50_ms") {
            println!(
                "  {} small GET {} p50 < 1 ms on loopback: {:.3} ms",
                if p50 < 1.0 { "PASS" } else { "MISS" },
                fmt_size(g.1),
                p50
            );
        }
    }
    for g in groups
        .iter()
        .filter(|g| g.0 == "large_get" || g.0 == "large_get_ranged")
    {
        let b = med(&args.baseline, g, "mib_per_server_cpu_s");
        let c = med(&args.candidate, g, "mib_per_server_cpu_s");
        if let (Some((b, _)), Some((c, _))) = (b, c) {
            let r = c / b;
            println!(
                "  {} {} MiB per server CPU-s >= 3x {}: {} vs {} = {:.2}x",
                if r >= 3.0 { "PASS" } else { "MISS" },
                g.0,
                args.baseline,
                fmt_num(c),
                fmt_num(b),
                r
            );
        }
    }
    Ok(())
}
