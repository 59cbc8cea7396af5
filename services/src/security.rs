//! Security settings of the servers: API keys and TLS on the public port and the HTTP door
//! (router and `autoj serve`), TLS with required client certificates on a judge (mTLS from
//! the router).

use std::path::{Path, PathBuf};

use autoj_router::tls::{http_server_config, HttpTls};
use autoj_router::ApiKeys;
use clap::Args;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ConfigError;

/// API keys and TLS on the public endpoint.
#[derive(Debug, Clone, Args)]
pub struct PublicSecurityArgs {
    /// File of API keys, one per line (`#` comments allowed); clients must send
    /// `authorization: Bearer <key>`. Health and reflection stay open.
    #[arg(long, env = "AUTOJ_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated (added to the file's). Prefer the environment variable:
    /// a command line is visible to other users of the machine.
    #[arg(long, env = "AUTOJ_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// PEM certificate (chain) for TLS on the public port; with --tls-key.
    #[arg(long, env = "AUTOJ_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AUTOJ_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The validated public-endpoint security.
#[derive(Debug, Clone)]
pub struct PublicSecurity {
    /// The accepted keys; `None` leaves the endpoint open.
    pub api_keys: Option<ApiKeys>,
    /// TLS on the listener; `None` is plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// TLS on the HTTP door, from the same certificate; `None` is plaintext.
    pub http_tls: Option<HttpTls>,
}

impl PublicSecurityArgs {
    /// Reads the key file and certificates once, at start-up.
    pub fn validate(&self) -> Result<PublicSecurity, ConfigError> {
        let from_file = match &self.api_keys_file {
            Some(path) => {
                Some(ApiKeys::from_file(path).map_err(|e| ConfigError::Security(e.to_string()))?)
            }
            None => None,
        };
        let from_env = match &self.api_keys {
            Some(list) => Some(ApiKeys::from_list(list).map_err(|_| {
                ConfigError::Security("--api-keys / AUTOJ_API_KEYS holds no key".into())
            })?),
            None => None,
        };
        let (tls, http_tls) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (pem(cert, "certificate")?, pem(key, "private key")?);
                let http = http_server_config(&cert, &key)
                    .map_err(|e| ConfigError::Security(e.to_string()))?;
                let grpc = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                (Some(grpc), Some(http))
            }
            _ => (None, None),
        };
        Ok(PublicSecurity {
            api_keys: ApiKeys::merged(from_file, from_env),
            tls,
            http_tls,
        })
    }
}

/// TLS on a judge's port; with a client CA, only callers presenting a certificate signed by
/// it (the router, in mTLS) get through.
#[derive(Debug, Clone, Args)]
pub struct JudgeTlsArgs {
    /// PEM certificate (chain) of this judge; with --tls-key.
    #[arg(long, env = "AUTOJ_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AUTOJ_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that client certificates must be signed by; set, every caller must
    /// present one (mTLS). Needs --tls-cert.
    #[arg(long, env = "AUTOJ_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl JudgeTlsArgs {
    /// The judge's TLS settings, `None` for plaintext.
    pub fn validate(&self) -> Result<Option<ServerTlsConfig>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(identity(cert, key)?);
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(pem(ca, "client CA")?));
        }
        Ok(Some(tls))
    }
}

/// A certificate and its key.
fn identity(cert: &Path, key: &Path) -> Result<Identity, ConfigError> {
    Ok(Identity::from_pem(
        pem(cert, "certificate")?,
        pem(key, "private key")?,
    ))
}

/// A PEM file's bytes, or a configuration error naming it.
fn pem(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    autoj_router::tls::read_pem(path, what).map_err(|e| ConfigError::Security(e.to_string()))
}
