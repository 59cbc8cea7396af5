//! `autoj`: serve Auto-J judges and talk to them. Parses the command line and hands off to
//! the library; see `autoj --help`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use autoj_services::cli::bench::BenchArgs;
use autoj_services::cli::bench_classifier::BenchClassifierArgs;
use autoj_services::cli::classify::ClassifyArgs;
use autoj_services::cli::client::{self, ClientArgs, ClientRequest};
use autoj_services::cli::eval::EvalArgs;
use autoj_services::cli::gpu_bench::GpuBenchArgs;
use autoj_services::cli::leaderboard::MetricsArgs;
use autoj_services::cli::load::LoadArgs;
use autoj_services::cli::quantize::QuantizeArgs;
use autoj_services::cli::verdict::{verdict_json, ProtocolArg};
use autoj_services::config::{apply_threads, EngineArgs, HttpListenArgs, ListenArgs};
use autoj_services::security::{JudgeTlsArgs, PublicSecurityArgs};
use autoj_services::shutdown::GraceArgs;
use autoj_services::stack::{run_judge, run_router, run_serve, RouterListen, ServeRouterArgs};
use autoj_services::telemetry::TelemetryArgs;
use autoj_services::{metrics, shutdown, telemetry};
use clap::{Parser, Subcommand};

/// Serve Auto-J LLM judges over gRPC, and call them.
#[derive(Debug, Parser)]
#[command(name = "autoj", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole stack in one process (default model unless --model is given).
    Serve {
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        router: ServeRouterArgs,
        #[command(flatten)]
        security: PublicSecurityArgs,
        #[command(flatten)]
        grace: GraceArgs,
        #[command(flatten)]
        observe: TelemetryArgs,
    },
    /// Run the router alone, in front of remote judge pools named in its config file.
    Router {
        /// Router config file (TOML): listen address, pools, routing rules, classifier.
        #[arg(long, env = "AUTOJ_ROUTER_CONFIG")]
        config: PathBuf,
        /// Listen address, overriding the config file's.
        #[arg(long, env = "AUTOJ_LISTEN")]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        http: HttpListenArgs,
        #[command(flatten)]
        security: PublicSecurityArgs,
        #[command(flatten)]
        grace: GraceArgs,
        #[command(flatten)]
        observe: TelemetryArgs,
    },
    /// Classify a query (or a JSONL file of them) into Auto-J's scenarios.
    Classify {
        #[command(flatten)]
        classify: ClassifyArgs,
    },
    /// Run a judge service alone (one model, one replica).
    Judge {
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        engine: EngineArgs,
        /// Name of this replica in `Accepted.replica` (default: the listen address).
        #[arg(long, env = "AUTOJ_REPLICA")]
        replica: Option<String>,
        #[command(flatten)]
        tls: JudgeTlsArgs,
        #[command(flatten)]
        grace: GraceArgs,
        #[command(flatten)]
        observe: TelemetryArgs,
    },
    /// Compare two responses to a query; prints the critique as it streams, then the verdict.
    Compare {
        /// The user's query.
        #[arg(long)]
        query: String,
        /// The first response.
        #[arg(long = "response-1")]
        response_1: String,
        /// The second response.
        #[arg(long = "response-2")]
        response_2: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Critique one response and rate it 1-10; prints the critique as it streams.
    Critique {
        /// The user's query.
        #[arg(long)]
        query: String,
        /// The response to critique.
        #[arg(long)]
        response: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a model directory (safetensors or PyTorch .bin, sharded or not, GPTQ) as a
    /// quantized GGUF file, tensor by tensor, without llama.cpp's tools.
    Quantize {
        #[command(flatten)]
        quantize: QuantizeArgs,
    },
    /// Measure prefill and decode speed against llama.cpp on the same GGUF (by hand, not CI).
    Bench {
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// The measurements of `scripts/gpu-check` (by hand on a GPU machine, not CI): one JSON
    /// object per step.
    GpuBench {
        #[command(flatten)]
        gpu: GpuBenchArgs,
    },
    /// Measure the scenario classifier: cross-validated accuracy and latency per query.
    BenchClassifier {
        #[command(flatten)]
        bench: BenchClassifierArgs,
    },
    /// Judge a JSONL file (Auto-J's test formats) against a running server, then print the
    /// metrics; an existing output file is resumed.
    Eval {
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Auto-J's leaderboard metrics from prediction files alone: agreement and consistency
    /// (pairwise), rating statistics and a ranking of models (`--single`).
    Metrics {
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Load a local server with N concurrent streams for T seconds and account for every
    /// stream (loopback only; `--fault kill-replica` kills a judge replica mid-run).
    Load {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Parse a judgment text from stdin and print the verdict as one JSON object.
    Verdict {
        /// The protocol the text answers.
        #[arg(long, value_enum)]
        protocol: ProtocolArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve { engine, .. } | Command::Judge { engine, .. } => engine.threads,
        Command::Bench { bench } => bench.threads,
        _ => 0,
    };
    apply_threads(threads);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve {
            listen,
            engine,
            router,
            security,
            grace,
            observe,
        } => {
            let _telemetry = telemetry::init_server("info", "autoj-serve");
            let settings = validated(&engine);
            let security = or_exit_64(security.validate());
            let grace = grace.shutdown_grace;
            match metrics::start(observe.metrics_listen).await {
                Ok(_) => {
                    let signal = shutdown::signal();
                    run_serve(settings, listen.listen, &router, security, grace, signal).await
                }
                Err(e) => Err(e),
            }
        }
        Command::Judge {
            listen,
            engine,
            replica,
            tls,
            grace,
            observe,
        } => {
            let _telemetry = telemetry::init_server("info", "autoj-judge");
            let settings = validated(&engine);
            let tls = or_exit_64(tls.validate());
            let replica = replica.unwrap_or_else(|| listen.listen.to_string());
            let grace = grace.shutdown_grace;
            match metrics::start(observe.metrics_listen).await {
                Ok(_) => {
                    let signal = shutdown::signal();
                    run_judge(settings, listen.listen, replica, tls, grace, signal).await
                }
                Err(e) => Err(e),
            }
        }
        Command::Router {
            config,
            listen,
            http,
            security,
            grace,
            observe,
        } => {
            let _telemetry = telemetry::init_server("info", "autoj-router");
            let security = or_exit_64(security.validate());
            let grace = grace.shutdown_grace;
            match metrics::start(observe.metrics_listen).await {
                Ok(_) => {
                    let listen = RouterListen {
                        grpc: listen,
                        http: http.http_listen,
                    };
                    run_router(&config, listen, security, grace, shutdown::signal()).await
                }
                Err(e) => Err(e),
            }
        }
        Command::Classify { classify } => {
            telemetry::init("warn");
            autoj_services::cli::classify::run(&classify).await
        }
        Command::Compare {
            query,
            response_1,
            response_2,
            client,
        } => {
            telemetry::init("warn");
            let req = ClientRequest::Compare {
                query,
                response_1,
                response_2,
            };
            client::run(req, &client).await
        }
        Command::Critique {
            query,
            response,
            client,
        } => {
            telemetry::init("warn");
            client::run(ClientRequest::Critique { query, response }, &client).await
        }
        Command::Quantize { quantize } => {
            benchmark(move || autoj_services::cli::quantize::run(&quantize)).await
        }
        Command::Bench { bench } => {
            benchmark(move || autoj_services::cli::bench::run(&bench)).await
        }
        Command::GpuBench { gpu } => {
            benchmark(move || autoj_services::cli::gpu_bench::run(&gpu)).await
        }
        Command::BenchClassifier { bench } => {
            benchmark(move || autoj_services::cli::bench_classifier::run(&bench)).await
        }
        Command::Eval { eval } => {
            telemetry::init("warn");
            autoj_services::cli::eval::run(&eval).await
        }
        Command::Load { load } => {
            telemetry::init("warn");
            autoj_services::cli::load::run(&load).await
        }
        Command::Metrics { metrics } => autoj_services::cli::leaderboard::run(&metrics),
        Command::Verdict { protocol } => {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => {
                    println!("{}", verdict_json(&text, protocol));
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!("cannot read stdin as UTF-8 text: {e}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                eprintln!("error: {:?}: {}", status.code(), status.message());
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A validated setting, or exit 64 (EX_USAGE) with the reason.
fn or_exit_64<T>(result: Result<T, autoj_services::config::ConfigError>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(64);
    })
}

/// Validated engine settings, or exit 64 (EX_USAGE) with the reason.
/// Runs a benchmark (blocking compute) off the async reactor, warnings only in the log.
async fn benchmark(
    run: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    telemetry::init("warn");
    tokio::task::spawn_blocking(run)
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("benchmark panicked: {e}")))
}

fn validated(engine: &EngineArgs) -> autoj_services::config::JudgeSettings {
    match engine.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(64);
        }
    }
}
