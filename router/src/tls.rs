//! TLS towards the judges: the rustls client settings (CA to verify the judges, and the
//! router's own certificate for mTLS) built once from the `[judge_tls]` section; and the
//! HTTP door's server settings from the public port's certificate.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::JudgeTlsConfig;
use crate::error::RouterError;

/// Reads a PEM file, naming it in the error.
pub fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, RouterError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RouterError::Tls(format!("cannot read {what} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(RouterError::Tls(format!(
            "{what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The client TLS settings of `[judge_tls]`: the judges must present a certificate chaining
/// to `ca`; with `cert` and `key`, the router presents its own (mTLS).
pub fn client_config(tls: &JudgeTlsConfig) -> Result<ClientTlsConfig, RouterError> {
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(&tls.ca, "CA")?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem(cert, "certificate")?,
                read_pem(key, "private key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(RouterError::Tls(
                "[judge_tls] needs both `cert` and `key`, or neither".into(),
            ))
        }
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}

/// The HTTP door's TLS settings, shared by its connections.
pub type HttpTls = std::sync::Arc<rustls::ServerConfig>;

/// The HTTP door's TLS settings from a PEM certificate chain and its private key (the files
/// of the public gRPC port): rustls on ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
pub fn http_server_config(cert: &[u8], key: &[u8]) -> Result<HttpTls, RouterError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| RouterError::Tls(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the certificate", &e))?;
    if chain.is_empty() {
        return Err(RouterError::Tls(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("the private key", &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("the certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
