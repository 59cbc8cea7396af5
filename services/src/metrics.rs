//! The Prometheus endpoint: `GET /metrics` on its own HTTP port, apart from gRPC, so
//! scraping needs neither TLS client certificates nor API keys and never competes with
//! judging traffic for the gRPC listener.
//!
//! The router and the judge record through the `metrics` facade (see
//! `autoj_router::metrics` and `autoj_judge::grpc::metrics` for the families); [`start`] installs
//! the process's Prometheus recorder behind that facade. Without `--metrics-listen` no
//! recorder is installed and every recording call is a no-op.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use autoj_judge::engine::Engine;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for time to first token, phases and classifier time: from a
/// millisecond (classifier, tiny models) to two minutes (a long prefill on a big model).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Inter-token buckets (seconds): decode steps run from a few milliseconds to a second.
const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

/// How often histograms are compacted (the exporter needs it done by its owner).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Something read at scrape time rather than recorded as it happens (engine counters).
type Collector = Box<dyn Fn() + Send + Sync>;

/// The collectors run before each scrape; set once the endpoint is up.
static COLLECTORS: OnceLock<Mutex<Vec<Collector>>> = OnceLock::new();

/// The running endpoint; dropping it does not stop the server (it lives as long as the
/// runtime).
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
}

/// Installs the Prometheus recorder and serves it on `listen`; prints
/// `metrics on http://ADDR/metrics` once bound. `Ok(None)` when `listen` is `None`.
pub async fn start(listen: Option<SocketAddr>) -> anyhow::Result<Option<MetricsEndpoint>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let handle = recorder()?;
    autoj_router::metrics::describe();
    autoj_judge::grpc::metrics::describe();
    let _ = COLLECTORS.set(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(UPKEEP_EVERY);
        loop {
            ticker.tick().await;
            upkeep.run_upkeep();
        }
    });
    let handle = Arc::new(handle);
    let app = axum::Router::new().route("/metrics", get(move || scrape(handle.clone())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    println!("metrics on http://{addr}/metrics");
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(Some(MetricsEndpoint { addr }))
}

/// Builds and installs the process's recorder with real histograms (buckets) for the
/// latency families.
fn recorder() -> anyhow::Result<PrometheusHandle> {
    // `Full` matchers are tried before `Suffix` ones.
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?;
    for name in [
        autoj_judge::grpc::metrics::INTER_TOKEN,
        autoj_router::metrics::INTER_TOKEN,
    ] {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.into()), INTER_TOKEN_BUCKETS)?;
    }
    builder
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}

/// One scrape: refresh what is read on demand, then render the text format.
async fn scrape(handle: Arc<PrometheusHandle>) -> String {
    if let Some(collectors) = COLLECTORS.get() {
        for collect in collectors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            collect();
        }
    }
    handle.render()
}

/// Reports `engine`'s own counters (batch size; completed, cancelled and failed requests)
/// at every scrape. Does nothing when metrics are off.
pub fn watch_engine(engine: &Engine) {
    if let Some(collectors) = COLLECTORS.get() {
        let engine = engine.clone();
        collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(move || {
                autoj_judge::grpc::metrics::sample_engine(engine.stats())
            }));
    }
}
