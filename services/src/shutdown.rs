//! The shutdown signal every server takes as a future, and the grace period that bounds
//! how long open streams may run on after it.

use std::future::Future;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes' stop signal), whichever comes first.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// How long a stopping server waits for open streams.
#[derive(Debug, Clone, clap::Args)]
pub struct GraceArgs {
    /// After SIGTERM or Ctrl-C: how long open streams may run on (new ones are refused and
    /// health says NOT_SERVING) before the server exits anyway, e.g. `30s`, `2m`, `500ms`.
    #[arg(long, env = "AUTOJ_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

/// Parses `30s`, `2m`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 2m or 500ms"))?;
    match unit {
        "" | "s" => Ok(std::time::Duration::from_secs(n)),
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("`{text}`: unit must be ms, s or m")),
    }
}

/// The shutdown future a server is handed.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `serve`, handing it a shutdown future that resolves with `signal`; once it has,
/// `serve` gets `grace` to finish its open streams, after which it is dropped (cutting what
/// is still open) and this returns. The server stops accepting and reports NOT_SERVING as
/// soon as its shutdown future resolves; that part is the server's.
pub async fn with_grace<S, F>(
    signal: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
    serve: S,
) -> anyhow::Result<()>
where
    S: FnOnce(Shutdown) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let (fired_tx, mut fired_rx) = tokio::sync::watch::channel(false);
    let shutdown = Box::pin(async move {
        signal.await;
        let _ = fired_tx.send(true);
    });
    let server = serve(shutdown);
    tokio::pin!(server);
    let expired = async {
        if fired_rx.wait_for(|fired| *fired).await.is_err() {
            // The server dropped its shutdown future without it firing: never expire.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = &mut server => result,
        () = expired => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing the streams still open");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("5"), Ok(std::time::Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
