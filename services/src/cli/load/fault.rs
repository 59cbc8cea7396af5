//! `autoj load --fault kill-replica`: a loopback deployment of two `autoj judge` replicas
//! behind an `autoj router`, loaded, with one replica killed (SIGKILL) halfway through.
//! With `--transport http` the router opens its HTTP door too, and the load goes there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{load, LoadArgs, Report, Transport};

/// How long a child server may take to start.
const START_LIMIT: Duration = Duration::from_secs(180);

/// A child server process, killed when dropped (so an error or Ctrl-C leaves none behind).
struct Proc {
    /// The process.
    child: Child,
    /// What it is, for messages.
    name: String,
    /// Where it listens (`127.0.0.1:PORT`).
    addr: String,
    /// Its HTTP door (`http://127.0.0.1:PORT`), when it opened one.
    http: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `autoj ARGS` and waits for its `listening on ADDR` line (an HTTP door announces
/// itself before that, with `http on http://ADDR/`).
async fn spawn(exe: &Path, name: &str, args: Vec<String>) -> anyhow::Result<Proc> {
    let mut child = Command::new(exe)
        .args(&args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut http = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(door) = line.strip_prefix("http on ") {
                http = Some(door.trim_end_matches('/').to_owned());
            }
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send((addr.to_owned(), http.take()));
            }
        }
    });
    let mut proc = Proc {
        child,
        name: name.to_owned(),
        addr: String::new(),
        http: None,
    };
    let (addr, http) = tokio::task::spawn_blocking(move || rx.recv_timeout(START_LIMIT))
        .await?
        .map_err(|_| anyhow::anyhow!("{name} did not start within {START_LIMIT:?}"))?;
    proc.addr = addr;
    proc.http = http;
    Ok(proc)
}

/// Waits (bounded) until the router's health says SERVING.
async fn until_serving(url: &str) -> anyhow::Result<()> {
    let until = Instant::now() + START_LIMIT;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_lazy();
    let mut health = HealthClient::new(channel);
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(&answer, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32) {
            return Ok(());
        }
        if Instant::now() > until {
            anyhow::bail!("the router did not report SERVING within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the fault scenario and returns the load report with what was killed, and when.
pub(super) async fn kill_replica(args: &LoadArgs) -> anyhow::Result<Report> {
    if !args.model.exists() {
        anyhow::bail!(
            "model not found at {}: --model names the judges' model",
            args.model.display()
        );
    }
    let exe = std::env::current_exe()?;
    let model = args.model.to_string_lossy().into_owned();
    let judge = |replica: &str| {
        [
            "judge",
            "--listen",
            "127.0.0.1:0",
            "--model",
            &model,
            "--replica",
            replica,
        ]
        .map(String::from)
        .to_vec()
    };
    let victim = spawn(&exe, "replica-a", judge("replica-a")).await?;
    let survivor = spawn(&exe, "replica-b", judge("replica-b")).await?;
    let config = std::env::temp_dir().join(format!("autoj-load-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[classifier]\nenabled = false\n[routing]\ndefault_pool = \"main\"\n\
             [[routing.pool]]\nname = \"main\"\nendpoints = [\"http://{}\", \"http://{}\"]\n\
             [limits]\nmax_in_flight = {}\n",
            victim.addr,
            survivor.addr,
            args.streams.max(256)
        ),
    )?;
    let mut router_args = [
        "router",
        "--config",
        &config.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    if args.transport == Transport::Http {
        router_args.extend(["--http-listen", "127.0.0.1:0"].map(String::from));
    }
    let router = spawn(&exe, "router", router_args).await;
    let _ = std::fs::remove_file(&config);
    let router = router?;
    let url = format!("http://{}", router.addr);
    until_serving(&url).await?;

    let at = args.duration / 2;
    let name = victim.name.clone();
    let kill = Box::new(move || {
        drop(victim); // SIGKILL and reap
        format!(
            "killed {name} (SIGKILL) {:.1} s into the run",
            at.as_secs_f64()
        )
    });
    // Plaintext and keyless: this deployment is the command's own.
    let mut plain = args.clone();
    plain.secure = Default::default();
    let target = match args.transport {
        Transport::Grpc => url,
        Transport::Http => router
            .http
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the router did not open its HTTP door"))?,
    };
    let report = load(&plain, &target, Some((at, kill))).await?;
    drop(router);
    drop(survivor);
    Ok(report)
}
