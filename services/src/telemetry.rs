//! Logs, traces and metrics set-up shared by every binary.
//!
//! - Logs: a `tracing` subscriber on stderr, filtered by `RUST_LOG`.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//!   set, the same `tracing` spans are exported over OTLP/gRPC (tonic) through the
//!   OpenTelemetry SDK, and the W3C trace-context propagator is installed so the router and
//!   the judge join one trace per request. Unset, no exporter, no OpenTelemetry layer and
//!   the no-op propagator: nothing is paid for it.
//! - Metrics: [`crate::metrics`] serves Prometheus on its own port when
//!   `--metrics-listen` is given.

use std::net::SocketAddr;

use clap::Args;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Observability settings of a server. Traces follow the standard `OTEL_*` variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_SERVICE_NAME`, `OTEL_BSP_*`, ...), not flags.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics over HTTP at this address (`GET /metrics`); off when unset.
    #[arg(long, env = "AUTOJ_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` (default
/// `info` for servers, `warn` for client commands so their stdout stays clean). Client
/// commands use this: they export no traces.
pub fn init(default_level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_writer(std::io::stderr)
        .try_init();
}

fn filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent and stops
/// the exporter, so a server that exits after draining still reports its last requests.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct Telemetry {
    /// The SDK's provider, when traces are exported.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: flushing traces at exit: {e}");
            }
        }
    }
}

/// Whether the environment asks for OTLP trace export: an endpoint variable is set and
/// non-empty, and `OTEL_SDK_DISABLED` is not `true`.
pub fn otlp_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Logs to stderr, plus OTLP trace export when [`otlp_requested`]. `service` names the
/// process in traces unless `OTEL_SERVICE_NAME` does. Must run inside the Tokio runtime
/// (the exporter's gRPC channel lives on it). An exporter that cannot be built is reported
/// and the server runs without traces.
pub fn init_server(default_level: &str, service: &str) -> Telemetry {
    let provider = if otlp_requested() {
        match tracer_provider(service) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: OTLP trace export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer().with_tracer(p.tracer("autoj"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter(default_level))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(otel)
        .try_init();
    if let Some(p) = &provider {
        // Spans made with the OpenTelemetry API directly (the judge's queue, prefill and
        // decode spans, which carry the engine's own timestamps) use the global provider.
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// The SDK provider with a batching OTLP/gRPC exporter configured from the environment.
fn tracer_provider(service: &str) -> Result<SdkTracerProvider, String> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
        if !protocol.trim().is_empty() && protocol.trim() != "grpc" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is `{protocol}`; this build exports over `grpc` only"
            ));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_args_parse_the_metrics_address() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            t: TelemetryArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["x", "--metrics-listen", "127.0.0.1:0"])
            .unwrap();
        assert_eq!(cli.t.metrics_listen.unwrap().ip().to_string(), "127.0.0.1");
        assert!(<Cli as clap::Parser>::try_parse_from(["x", "--metrics-listen", "nope"]).is_err());
    }
}
