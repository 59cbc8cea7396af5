//! `autoj load`: N concurrent judging streams for T seconds against a local server, and an
//! account of how every stream ended. Bounded in count and time, and loopback only: it is a
//! test of this machine's server, not a tool to aim at someone else's.
//!
//! Every stream ends in exactly one of: **completed** (exactly one Verdict, then Usage, no
//! status), **failed** with a gRPC status (counted by code), or **lost** (ended without a
//! verdict and without a status — a bug). Events seen twice where the contract says once
//! (Accepted, Verdict, Usage) are **duplicated** — also a bug. Either makes the command exit
//! non-zero.
//!
//! With `--fault kill-replica` it builds its own deployment first — two `autoj judge`
//! replicas and an `autoj router` over them, all on loopback — and kills one replica halfway
//! through the run: streams the router had not yet started on it fail over; streams it was
//! generating fail with a status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::client::SecureClientArgs;
use crate::shutdown::parse_duration;

mod fault;

/// Most concurrent streams the command will open.
pub const MAX_STREAMS: usize = 1024;

/// Longest run the command will do.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A fault to inject during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Start two judge replicas and a router, kill one replica halfway through.
    KillReplica,
}

/// Settings of a load run.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address; must resolve to loopback only (ignored with --fault, which starts
    /// its own servers).
    #[arg(long, env = "AUTOJ_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// API key and TLS trust for a secured server.
    #[command(flatten)]
    pub secure: SecureClientArgs,
    /// Concurrent streams (at most 1024).
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// How long new streams are started, e.g. `30s`, `10m` (at most 1 h); streams open at
    /// the end run to their end.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// max_new_tokens of every request (small keeps streams short).
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: u32,
    /// Deadline of each stream (`grpc-timeout`); one that passes counts as failed.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub stream_timeout: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Inject a fault (builds its own loopback deployment of two replicas and a router).
    #[arg(long, value_enum)]
    pub fault: Option<Fault>,
    /// Judge model for the replicas --fault starts.
    #[arg(long, env = "AUTOJ_MODEL", default_value = crate::config::DEFAULT_MODEL)]
    pub model: PathBuf,
}

/// How the run went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Concurrent streams.
    pub streams: usize,
    /// Seconds new streams were started for.
    pub duration_s: f64,
    /// Seconds from start until the last stream ended.
    pub elapsed_s: f64,
    /// Streams started.
    pub started: u64,
    /// Streams that ended with exactly one Verdict and no status.
    pub completed: u64,
    /// Streams that ended with a gRPC status, by code name.
    pub failed: BTreeMap<String, u64>,
    /// Streams that ended without a verdict and without a status (none allowed).
    pub lost: u64,
    /// Events repeated where the contract allows one (none allowed).
    pub duplicated: u64,
    /// Completed streams per second.
    pub completed_per_s: f64,
    /// Median seconds from request to Verdict, over completed streams.
    pub verdict_p50_s: f64,
    /// 95th percentile of the same.
    pub verdict_p95_s: f64,
    /// What --fault did, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl Report {
    /// Whether the run shows a bug: a lost stream or a duplicated event.
    pub fn broken(&self) -> bool {
        self.lost > 0 || self.duplicated > 0
    }

    /// Failed streams of all codes.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// How one stream ended.
#[derive(Debug, Default)]
struct Outcome {
    /// The status it ended with, if any.
    status: Option<tonic::Code>,
    /// Verdict events seen.
    verdicts: u64,
    /// Events seen more often than once: Accepted, Verdict, Usage beyond the first.
    duplicated: u64,
    /// Time from request to Verdict.
    verdict_after: Option<Duration>,
}

/// The running tally, shared by the workers.
#[derive(Debug, Default)]
struct Tally {
    report: Report,
    latencies: Vec<f64>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome) {
        let r = &mut self.report;
        r.started += 1;
        r.duplicated += outcome.duplicated;
        match outcome.status {
            Some(code) => *r.failed.entry(format!("{code:?}")).or_default() += 1,
            None if outcome.verdicts >= 1 => {
                r.completed += 1;
                if let Some(t) = outcome.verdict_after {
                    self.latencies.push(t.as_secs_f64());
                }
            }
            None => r.lost += 1,
        }
    }
}

/// Refuses any address that is not loopback (every address the host resolves to).
pub async fn check_loopback(addr: &str) -> anyhow::Result<()> {
    let uri: tonic::codegen::http::Uri = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("bad address {addr}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("address {addr} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
        .collect();
    if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "autoj load only runs against this machine: {addr} resolves to {resolved:?}, not loopback only"
        );
    }
    Ok(())
}

/// Runs the load (with its fault, if any) and prints the report; an error when a stream
/// was lost or an event duplicated.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    if args.streams == 0 || args.streams > MAX_STREAMS {
        anyhow::bail!("--streams must be between 1 and {MAX_STREAMS}");
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        anyhow::bail!("--duration must be between 1 s and 1 h");
    }
    let report = match args.fault {
        None => {
            check_loopback(&args.addr).await?;
            load(args, &args.addr, None).await?
        }
        Some(Fault::KillReplica) => fault::kill_replica(args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    if report.broken() {
        anyhow::bail!(
            "{} streams lost and {} events duplicated",
            report.lost,
            report.duplicated
        );
    }
    Ok(())
}

/// Something to do at a moment of the run (the fault).
type Injection = (Duration, Box<dyn FnOnce() -> String + Send>);

/// Runs `args.streams` workers against `addr` for `args.duration`, calling the injection
/// at its moment.
async fn load(args: &LoadArgs, addr: &str, injection: Option<Injection>) -> anyhow::Result<Report> {
    let channel = args.secure.connect(addr).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let stop_at = start + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.streams {
        let channel = channel.clone();
        let tally = tally.clone();
        let args = args.clone();
        workers.spawn(async move {
            let mut n = worker;
            while Instant::now() < stop_at {
                let outcome = one_stream(&channel, &args, n).await;
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(outcome);
                n += args.streams;
            }
        });
    }
    let mut fault = None;
    if let Some((at, inject)) = injection {
        tokio::time::sleep(at).await;
        fault = Some(inject());
    }
    while let Some(joined) = workers.join_next().await {
        joined?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("a worker outlived the run"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    tally.latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let n = tally.latencies.len();
        if n == 0 {
            return 0.0;
        }
        tally.latencies[((n as f64 * q) as usize).min(n - 1)]
    };
    let mut report = tally.report.clone();
    report.streams = args.streams;
    report.duration_s = args.duration.as_secs_f64();
    report.elapsed_s = elapsed;
    report.completed_per_s = report.completed as f64 / elapsed;
    report.verdict_p50_s = pick(0.5);
    report.verdict_p95_s = pick(0.95);
    report.fault = fault;
    Ok(report)
}

/// One stream, start to end: Compare on even numbers, Critique on odd.
async fn one_stream(channel: &Channel, args: &LoadArgs, n: usize) -> Outcome {
    let options = Some(pb::JudgeOptions {
        generation: Some(pb::GenerationOptions {
            max_new_tokens: Some(args.max_new_tokens),
            ..Default::default()
        }),
        ..Default::default()
    });
    let query = format!(
        "Load test question {n}: what is {} plus {}?",
        n % 97,
        n % 89
    );
    let mut client = JudgeClient::new(channel.clone());
    let started = Instant::now();
    let call = if n.is_multiple_of(2) {
        let message = pb::CompareRequest {
            query,
            response_1: format!("It is {}.", n % 97 + n % 89),
            response_2: "I do not know.".into(),
            options,
        };
        match args.secure.request(message) {
            Ok(mut r) => {
                r.set_timeout(args.stream_timeout);
                client.compare(r).await
            }
            Err(_) => Err(tonic::Status::invalid_argument("bad API key")),
        }
    } else {
        let message = pb::CritiqueRequest {
            query,
            response: format!("The answer is {}.", n % 97 + n % 89),
            options,
        };
        match args.secure.request(message) {
            Ok(mut r) => {
                r.set_timeout(args.stream_timeout);
                client.critique(r).await
            }
            Err(_) => Err(tonic::Status::invalid_argument("bad API key")),
        }
    };
    let mut outcome = Outcome::default();
    let mut stream = match call {
        Ok(response) => response.into_inner(),
        Err(status) => {
            outcome.status = Some(status.code());
            return outcome;
        }
    };
    let (mut accepted, mut usage) = (0u64, 0u64);
    loop {
        match stream.message().await {
            Ok(Some(event)) => match event.event {
                Some(Event::Accepted(_)) => accepted += 1,
                Some(Event::Verdict(_)) => {
                    outcome.verdicts += 1;
                    outcome.verdict_after.get_or_insert(started.elapsed());
                }
                Some(Event::Usage(_)) => usage += 1,
                _ => {}
            },
            Ok(None) => break,
            Err(status) => {
                outcome.status = Some(status.code());
                break;
            }
        }
    }
    outcome.duplicated =
        accepted.saturating_sub(1) + outcome.verdicts.saturating_sub(1) + usage.saturating_sub(1);
    outcome
}

fn print_text(r: &Report) {
    println!(
        "{} streams for {:.0} s (all ended after {:.1} s)",
        r.streams, r.duration_s, r.elapsed_s
    );
    if let Some(fault) = &r.fault {
        println!("fault: {fault}");
    }
    println!("started     {}", r.started);
    println!(
        "completed   {} ({:.2}/s; verdict p50 {:.2} s, p95 {:.2} s)",
        r.completed, r.completed_per_s, r.verdict_p50_s, r.verdict_p95_s
    );
    println!("failed      {} {:?}", r.failed_total(), r.failed);
    println!("lost        {}", r.lost);
    println!("duplicated  {}", r.duplicated);
}
