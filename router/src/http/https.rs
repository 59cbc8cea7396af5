//! The HTTP door over TLS, with the certificate of the public port: each accepted
//! connection completes a rustls handshake (bounded by [`HANDSHAKE`]), then speaks
//! HTTP/1.1 to the door's routes. On shutdown the listener stops accepting and the open
//! connections, streams included, are let finish.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake before the connection is closed.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `shutdown` completes, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: crate::tls::HttpTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "HTTP door: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP door: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTP door: TLS handshake timed out");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "HTTP door: connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
