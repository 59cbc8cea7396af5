//! TLS towards the judges: the rustls client settings (CA to verify the judges, and the
//! router's own certificate for mTLS) built once from the `[judge_tls]` section.

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
