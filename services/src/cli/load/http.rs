//! One load stream through the router's HTTP door: a `POST /v1/judge/compare` (or
//! `/critique`) asking for Server-Sent Events, on a connection of its own, read event by
//! event as it arrives.
//!
//! How it ends, in the accounting's words: an answer other than 2xx **fails** with the gRPC
//! code its error body names; an `event: error` **fails** with the code in its data; a body
//! that ends after `verdict` and `usage` **completes**; a body that ends without them, a
//! connection cut mid-body, or a stream still open long after its deadline is **lost**.
//! Failing to connect (the TLS handshake included) or to send the request fails with
//! `Unavailable`, as a gRPC client's transport error does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoj_proto::observe::code_name;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{header, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Code;

use super::sse::{SseEvent, SseParser};
use super::{Call, LoadArgs, Outcome, Seen};

/// How long past its own deadline a stream may stay open before it counts as lost: the
/// server ends a stream at its deadline with an `error` event, so one still open this long
/// after has a server that stopped answering.
const PAST_DEADLINE: Duration = Duration::from_secs(30);

/// Largest error answer read (one small JSON document).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The HTTP door under load. Cheap to clone.
#[derive(Clone)]
pub(super) struct Door {
    /// `host:port`: where to connect, and the `Host` header.
    authority: String,
    /// The path the routes hang under (empty for a door at the root).
    prefix: String,
    /// TLS towards a door that serves it: the connector and the name its certificate must
    /// show; `None` for plaintext.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Door {
    /// The door at `url` (`http://HOST:PORT` or `https://`, a path prefix allowed). With a
    /// CA (`ca`: its PEM bytes) the door is dialled over TLS, trusting that CA only, and its
    /// certificate must name `domain` (default: the address's host); `https://` needs one.
    pub(super) fn parse(
        url: &str,
        ca: Option<&[u8]>,
        domain: Option<&str>,
    ) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad address {url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("give the door's address as http://HOST:PORT, not {url}"),
        };
        if https && ca.is_none() {
            anyhow::bail!("an https:// door needs --tls-ca (the CA its certificate chains to)");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("address {url} has no host"))?;
        let tls = match ca {
            None => None,
            Some(ca) => {
                let name = domain
                    .unwrap_or(host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|e| anyhow::anyhow!("bad TLS name {name}: {e}"))?;
                Some((TlsConnector::from(client_config(ca)?), name))
            }
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            authority: format!("{host}:{port}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            tls,
        })
    }

    /// `call` as an HTTP request asking for events; `None` when the API key cannot be a
    /// header value.
    fn request(&self, args: &LoadArgs, call: &Call) -> Option<Request<Full<Bytes>>> {
        let (route, body) = match call {
            Call::Compare(m) => ("compare", serde_json::to_vec(m)),
            Call::Critique(m) => ("critique", serde_json::to_vec(m)),
        };
        let mut request = Request::post(format!("{}/v1/judge/{route}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-timeout-ms", args.stream_timeout.as_millis().to_string());
        if let Some(key) = &args.secure.api_key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        request.body(Full::new(Bytes::from(body.ok()?))).ok()
    }
}

/// Runs `call` to its end through `door`.
pub(super) async fn one_stream(door: &Door, args: &LoadArgs, call: Call) -> Outcome {
    let mut outcome = Outcome::new(Instant::now());
    let Some(request) = door.request(args, &call) else {
        // As the gRPC path answers a key that cannot be metadata.
        return outcome.failed(Code::InvalidArgument);
    };
    let limit = args.stream_timeout + PAST_DEADLINE;
    if tokio::time::timeout(limit, exchange(door, request, &mut outcome))
        .await
        .is_err()
    {
        outcome.broken = true;
    }
    outcome
}

/// The task driving a connection; aborting it (when this is dropped) closes the socket.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TLS settings that trust the PEM CA `ca` only (rustls on ring, HTTP/1.1 by ALPN).
fn client_config(ca: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.map_err(|e| anyhow::anyhow!("--tls-ca: {e}"))?)?;
    }
    if roots.is_empty() {
        anyhow::bail!("--tls-ca holds no certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connects (over TLS when the door serves it), sends `request` and reads the answer into
/// `outcome`.
async fn exchange(door: &Door, request: Request<Full<Bytes>>, outcome: &mut Outcome) {
    let Ok(tcp) = TcpStream::connect(&door.authority).await else {
        return outcome.fail(Code::Unavailable);
    };
    let _ = tcp.set_nodelay(true);
    match &door.tls {
        None => send(tcp, request, outcome).await,
        Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
            Ok(stream) => send(stream, request, outcome).await,
            Err(_) => outcome.fail(Code::Unavailable),
        },
    }
}

/// Sends `request` on the connection `io` and reads the answer into `outcome`.
async fn send<I>(io: I, request: Request<Full<Bytes>>, outcome: &mut Outcome)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, connection)) = http1::handshake(TokioIo::new(io)).await else {
        return outcome.fail(Code::Unavailable);
    };
    let _driver = Driver(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let Ok(response) = sender.send_request(request).await else {
        return outcome.fail(Code::Unavailable);
    };
    if response.status().is_success() {
        read_events(response, outcome).await;
    } else {
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        outcome.failure = Some(failure_key(&body).unwrap_or_else(|| format!("http_{status}")));
    }
}

/// Reads a 2xx answer's events until the body ends or an `error` event arrives.
async fn read_events(response: Response<Incoming>, outcome: &mut Outcome) {
    let mut body = response.into_body();
    let mut parser = SseParser::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            outcome.broken = true; // cut mid-body: no end, no status
            return;
        };
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        for event in parser.push(chunk) {
            if !note(&event, outcome) {
                return;
            }
        }
    }
}

/// Counts `event`; false when it ends the stream (`error`).
fn note(event: &SseEvent, outcome: &mut Outcome) -> bool {
    outcome.saw(match event.name.as_str() {
        "accepted" => Seen::Accepted,
        "verdict" => Seen::Verdict,
        "usage" => Seen::Usage,
        "error" => {
            outcome.failure = Some(
                failure_key(event.data.as_bytes()).unwrap_or_else(|| "unreadable_error".into()),
            );
            return false;
        }
        _ => Seen::Other,
    });
    true
}

/// The failure's key in the report (`InvalidArgument`, as the gRPC path writes a code) from
/// an error body `{"error": {"code": "INVALID_ARGUMENT", ...}}`; `None` when it is not one.
fn failure_key(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    let name = body.get("error")?.get("code")?.as_str()?;
    let code = (0..=16)
        .map(Code::from_i32)
        .find(|&c| code_name(c) == name)?;
    Some(format!("{code:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codes_from_error_bodies() {
        let body =
            br#"{"error": {"code": "UNAUTHENTICATED", "message": "missing or invalid API key"}}"#;
        assert_eq!(failure_key(body).as_deref(), Some("Unauthenticated"));
        let body = br#"{"error": {"code": "DEADLINE_EXCEEDED", "message": "late"}}"#;
        assert_eq!(failure_key(body).as_deref(), Some("DeadlineExceeded"));
        assert_eq!(failure_key(br#"{"error": {"code": "TEAPOT"}}"#), None);
        assert_eq!(failure_key(b"<html>bad gateway</html>"), None);
    }

    #[test]
    fn parses_door_addresses() {
        let door = Door::parse("http://127.0.0.1:8080/", None, None).unwrap();
        assert_eq!(
            (door.authority.as_str(), door.prefix.as_str()),
            ("127.0.0.1:8080", "")
        );
        let door = Door::parse("http://localhost/autoj", None, None).unwrap();
        assert_eq!(
            (door.authority.as_str(), door.prefix.as_str()),
            ("localhost:80", "/autoj")
        );
        let err = Door::parse("https://127.0.0.1:8443", None, None).unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        assert!(Door::parse("ftp://127.0.0.1", None, None).is_err());
    }
}
