//! `autoj load`: N concurrent judging streams for T seconds against a local server, and an
//! account of how every stream ended. Bounded in count and time, and loopback only: it is a
//! test of this machine's server, not a tool to aim at someone else's.
//!
//! Every stream ends in exactly one of: **completed** (exactly one Verdict, then Usage, no
//! status), **failed** with a gRPC status (counted by code), or **lost** (ended without a
//! verdict and usage and without a status — a bug). Events seen twice where the contract says
//! once (Accepted, Verdict, Usage) are **duplicated** — also a bug. Either makes the command
//! exit non-zero.
//!
//! The streams go over gRPC (`grpc`, one shared HTTP/2 channel), or with `--transport http`
//! through the router's HTTP door as Server-Sent Events (`http`: a POST per stream on a
//! connection of its own; an error answer or `event: error` carries the gRPC code).
//!
//! With `--fault kill-replica` it builds its own deployment first — two `autoj judge`
//! replicas and an `autoj router` over them, all on loopback — and kills one replica halfway
//! through the run: streams the router had not yet started on it fail over; streams it was
//! generating fail with a status.
//!
//! Modules: `grpc` and `http` run one stream each way, `sse` reads an event stream, `fault`
//! builds the deployment a fault needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoj_proto::v1 as pb;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::client::SecureClientArgs;
use crate::shutdown::parse_duration;

mod fault;
mod grpc;
mod http;
mod sse;

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

/// How the streams reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// gRPC `Judge.Compare` / `Judge.Critique` streams on one shared channel.
    #[default]
    Grpc,
    /// The router's HTTP door (`--http-listen`): `POST /v1/judge/compare` or `/critique`
    /// read as Server-Sent Events, one connection per stream.
    Http,
}

impl Transport {
    /// The name the flag and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

/// Settings of a load run.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address (the gRPC port, or the HTTP door's with `--transport http`); must
    /// resolve to loopback only (ignored with --fault, which starts its own servers).
    #[arg(long, env = "AUTOJ_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// `grpc`, or `http` to load the HTTP door with Server-Sent Events streams (over TLS
    /// with --tls-ca, as gRPC).
    #[arg(long, env = "AUTOJ_LOAD_TRANSPORT", value_enum, default_value_t = Transport::Grpc)]
    pub transport: Transport,
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
    /// Deadline of each stream (`grpc-timeout`, or `X-Timeout-Ms` over HTTP); one that
    /// passes counts as failed.
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
    /// How the streams reached the server.
    pub transport: Transport,
    /// Concurrent streams.
    pub streams: usize,
    /// Seconds new streams were started for.
    pub duration_s: f64,
    /// Seconds from start until the last stream ended.
    pub elapsed_s: f64,
    /// Streams started.
    pub started: u64,
    /// Streams that ended with a Verdict and Usage and no status.
    pub completed: u64,
    /// Streams that ended with a gRPC status, by code name (`Unavailable`); over HTTP, the
    /// code of the error answer or `error` event (`http_502` for an answer without one).
    pub failed: BTreeMap<String, u64>,
    /// Streams that ended without a verdict and usage and without a status, or whose
    /// connection broke before the end (none allowed).
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

/// One stream's request: Compare on even numbers, Critique on odd.
#[derive(Debug, Clone)]
enum Call {
    /// `Judge.Compare`.
    Compare(pb::CompareRequest),
    /// `Judge.Critique`.
    Critique(pb::CritiqueRequest),
}

impl Call {
    /// Stream `n`'s request: small, different per stream, `max_new_tokens` from `args`.
    fn nth(args: &LoadArgs, n: usize) -> Self {
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
        if n.is_multiple_of(2) {
            Self::Compare(pb::CompareRequest {
                query,
                response_1: format!("It is {}.", n % 97 + n % 89),
                response_2: "I do not know.".into(),
                options,
            })
        } else {
            Self::Critique(pb::CritiqueRequest {
                query,
                response: format!("The answer is {}.", n % 97 + n % 89),
                options,
            })
        }
    }
}

/// An event of a stream, as far as the accounting cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// `Accepted` (one per stream).
    Accepted,
    /// `Verdict` (one per stream).
    Verdict,
    /// `Usage` (one per stream, the last).
    Usage,
    /// Critique text and anything else.
    Other,
}

/// How one stream ended.
#[derive(Debug)]
struct Outcome {
    /// When the request was sent.
    started: Instant,
    /// The status it ended with, by code name, if any.
    failure: Option<String>,
    /// Whether it ended without a proper end: a connection cut mid-answer, or no end by
    /// its deadline and then some (counted lost whatever came before).
    broken: bool,
    /// Accepted events seen.
    accepted: u64,
    /// Verdict events seen.
    verdicts: u64,
    /// Usage events seen.
    usages: u64,
    /// Time from request to Verdict.
    verdict_after: Option<Duration>,
}

impl Outcome {
    /// A stream whose request was sent at `started`, nothing seen yet.
    fn new(started: Instant) -> Self {
        Self {
            started,
            failure: None,
            broken: false,
            accepted: 0,
            verdicts: 0,
            usages: 0,
            verdict_after: None,
        }
    }

    /// Counts one event.
    fn saw(&mut self, seen: Seen) {
        match seen {
            Seen::Accepted => self.accepted += 1,
            Seen::Verdict => {
                self.verdicts += 1;
                self.verdict_after.get_or_insert(self.started.elapsed());
            }
            Seen::Usage => self.usages += 1,
            Seen::Other => {}
        }
    }

    /// Ends the stream with the status `code`.
    fn fail(&mut self, code: tonic::Code) {
        self.failure = Some(format!("{code:?}"));
    }

    /// [`Outcome::fail`], by value.
    fn failed(mut self, code: tonic::Code) -> Self {
        self.fail(code);
        self
    }

    /// Events repeated where the contract allows one.
    fn duplicated(&self) -> u64 {
        self.accepted.saturating_sub(1)
            + self.verdicts.saturating_sub(1)
            + self.usages.saturating_sub(1)
    }
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
        r.duplicated += outcome.duplicated();
        match outcome.failure {
            Some(code) => *r.failed.entry(code).or_default() += 1,
            None if !outcome.broken && outcome.verdicts >= 1 && outcome.usages >= 1 => {
                r.completed += 1;
                if let Some(t) = outcome.verdict_after {
                    self.latencies.push(t.as_secs_f64());
                }
            }
            None => r.lost += 1,
        }
    }
}

/// Where the streams go: a gRPC channel or the HTTP door. Cheap to clone.
#[derive(Debug, Clone)]
enum Target {
    /// The gRPC server's channel.
    Grpc(Channel),
    /// The HTTP door.
    Http(http::Door),
}

impl Target {
    /// Connects to `addr` the way `args.transport` says.
    async fn open(args: &LoadArgs, addr: &str) -> anyhow::Result<Self> {
        Ok(match args.transport {
            Transport::Grpc => Self::Grpc(args.secure.connect(addr).await?),
            Transport::Http => {
                let ca = match &args.secure.tls_ca {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("cannot read --tls-ca {}: {e}", path.display())
                    })?),
                    None => None,
                };
                let domain = args.secure.tls_domain.as_deref();
                Self::Http(http::Door::parse(addr, ca.as_deref(), domain)?)
            }
        })
    }

    /// Runs stream `n` to its end.
    async fn stream(&self, args: &LoadArgs, n: usize) -> Outcome {
        let call = Call::nth(args, n);
        match self {
            Self::Grpc(channel) => grpc::one_stream(channel, args, call).await,
            Self::Http(door) => http::one_stream(door, args, call).await,
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
    let target = Target::open(args, addr).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let stop_at = start + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.streams {
        let target = target.clone();
        let tally = tally.clone();
        let args = args.clone();
        workers.spawn(async move {
            let mut n = worker;
            while Instant::now() < stop_at {
                let outcome = target.stream(&args, n).await;
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
    report.transport = args.transport;
    report.streams = args.streams;
    report.duration_s = args.duration.as_secs_f64();
    report.elapsed_s = elapsed;
    report.completed_per_s = report.completed as f64 / elapsed;
    report.verdict_p50_s = pick(0.5);
    report.verdict_p95_s = pick(0.95);
    report.fault = fault;
    Ok(report)
}

fn print_text(r: &Report) {
    println!(
        "{} {} streams for {:.0} s (all ended after {:.1} s)",
        r.streams,
        r.transport.name(),
        r.duration_s,
        r.elapsed_s
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
