//! API keys on the public endpoint: `authorization: Bearer <key>` metadata checked against
//! a set of keys held only as SHA-256 hashes, compared in constant time.
//!
//! Hashing first means the comparison always runs over 32 bytes whatever the key's length,
//! and a memory dump of the router holds no usable key. Every key in the set is compared
//! (no early exit), so timing tells nothing about which key, or how much of one, matched.
//! A refusal is UNAUTHENTICATED with the same message whether the header is missing,
//! malformed or wrong: a caller learns nothing about why.
//!
//! The check is a tonic [`Interceptor`] mounted on the `Judge` and `Scenarios` services
//! only, so health checks and reflection stay open to probes that hold no key.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::RouterError;

/// The one message every refusal carries.
const REFUSED: &str = "missing or invalid API key";

/// The accepted API keys, as SHA-256 digests.
#[derive(Clone)]
pub struct ApiKeys {
    /// One digest per key; shared by every clone of the interceptor.
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print digests: they are as good as keys for an offline guesser.
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// SHA-256 of a key.
fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Hashes `keys` (trimmed; blank ones skipped); an error when none remains, so a
    /// misconfigured router never runs open by accident.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, RouterError> {
        let mut digests: Vec<[u8; 32]> = keys
            .into_iter()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()))
            .collect();
        digests.sort_unstable();
        digests.dedup();
        if digests.is_empty() {
            return Err(RouterError::Auth("no API key given".into()));
        }
        Ok(Self {
            digests: Arc::new(digests),
        })
    }

    /// Keys from a file, one per line; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self, RouterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RouterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(text.lines().filter(|l| !l.trim_start().starts_with('#')))
            .map_err(|_| RouterError::Auth(format!("{} holds no API key", path.display())))
    }

    /// Keys from a comma-separated list (the `AUTOJ_API_KEYS` form).
    pub fn from_list(list: &str) -> Result<Self, RouterError> {
        Self::new(list.split(','))
    }

    /// Both sources together: either may be absent, not both.
    pub fn merged(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let mut all: Vec<[u8; 32]> =
                    a.digests.iter().chain(b.digests.iter()).copied().collect();
                all.sort_unstable();
                all.dedup();
                Some(Self {
                    digests: Arc::new(all),
                })
            }
            (a, b) => a.or(b),
        }
    }

    /// How many distinct keys are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Always false: an empty set cannot be built.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of the accepted keys, compared against every one of them in
    /// constant time.
    pub fn accepts(&self, key: &[u8]) -> bool {
        let presented = digest(key);
        let mut found = subtle::Choice::from(0u8);
        for known in self.digests.iter() {
            found |= known.ct_eq(&presented);
        }
        found.into()
    }

    /// Checks the `authorization` header of `request`'s metadata.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let key = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match key {
            Some(key) if self.accepts(key.as_bytes()) => Ok(()),
            _ => {
                tracing::debug!(error_type = "unauthenticated", "request refused");
                Err(Status::unauthenticated(REFUSED))
            }
        }
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Refuses calls without a valid key; with no keys configured, lets everything through.
#[derive(Debug, Clone, Default)]
pub struct AuthInterceptor {
    /// `None`: authentication is off.
    keys: Option<ApiKeys>,
}

impl AuthInterceptor {
    /// Checks against `keys`, or nothing when `None`.
    pub fn new(keys: Option<ApiKeys>) -> Self {
        Self { keys }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(keys) = &self.keys {
            keys.check(&request)?;
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    }

    #[test]
    fn accepts_only_listed_keys() {
        let keys = ApiKeys::from_list(" alpha , beta,,").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.check(&with_header("Bearer alpha")).is_ok());
        assert!(keys.check(&with_header("bearer beta")).is_ok());
        for bad in [
            "Bearer alph",
            "Bearer alphaa",
            "Basic alpha",
            "alpha",
            "Bearer ",
        ] {
            let err = keys.check(&with_header(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert_eq!(err.message(), REFUSED);
        }
        let err = keys.check(&Request::new(())).unwrap_err();
        assert_eq!(err.message(), REFUSED, "missing and wrong look the same");
    }

    #[test]
    fn refuses_an_empty_key_set() {
        assert!(ApiKeys::from_list(" , ").is_err());
        assert!(format!("{:?}", ApiKeys::from_list("k").unwrap()).contains("1 keys"));
    }
}
