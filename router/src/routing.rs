//! The routing table: which judge pool serves a request, by scenario, group and language.
//!
//! The file form ([`RoutingConfig`]) is what an operator writes; [`RoutingTable::new`] checks
//! it once against the catalog (every pool referenced exists, every pool has exactly one
//! address source, scenario and group names exist) so that a request can always be routed.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RouterError;
use crate::language::Lang;
use crate::scenarios::Catalog;

/// The `[routing]` section of the router config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The pool that serves requests no rule matches.
    pub default_pool: String,
    /// How often pools given by `dns` are resolved again, in seconds (pods come and go).
    #[serde(default = "default_dns_refresh_secs")]
    pub dns_refresh_secs: u64,
    /// How long to wait for a TCP connection to a replica before trying another, in ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The judge pools.
    #[serde(rename = "pool", default)]
    pub pools: Vec<PoolConfig>,
    /// Rules, tried in order; the first that matches picks the pool.
    #[serde(rename = "rule", default)]
    pub rules: Vec<RuleConfig>,
}

/// Seconds between DNS resolutions of a `dns` pool unless configured.
fn default_dns_refresh_secs() -> u64 {
    10
}

/// Connect timeout to a replica unless configured, in ms.
fn default_connect_timeout_ms() -> u64 {
    1000
}

/// A `[[routing.pool]]`: a name and exactly one of `endpoints`, `dns` or `local`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The name rules refer to.
    pub name: String,
    /// Fixed replica URLs, e.g. `http://10.0.0.5:50051`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// `host:port` resolved to every address (a Kubernetes headless Service), re-resolved
    /// every `dns_refresh_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// Served by a judge inside this process (one-process mode); the binary supplies it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

/// A `[[routing.rule]]`: conditions (all given ones must hold; within a list any value
/// matches) and the pool to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Optional label for logs and error messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scenario names that match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<String>,
    /// Scenario groups that match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Languages that match (`en`, `zh`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<Lang>,
    /// The pool for matching requests.
    pub pool: String,
}

/// Where a pool's replicas come from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSource {
    /// Fixed URLs.
    Endpoints(Vec<String>),
    /// `host:port` to resolve periodically.
    Dns(String),
    /// An in-process judge supplied by the binary.
    Local,
}

/// A validated pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Its name.
    pub name: String,
    /// Its replicas' source.
    pub source: PoolSource,
}

/// What a request is routed on.
#[derive(Debug, Clone, Copy)]
pub struct RouteKey<'a> {
    /// The scenario (named by the client or classified).
    pub scenario: &'a str,
    /// The scenario's group, if it has one.
    pub group: Option<&'a str>,
    /// The template language.
    pub language: Lang,
}

/// The validated, ordered rules plus the default pool.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    /// Rules in file order.
    rules: Vec<RuleConfig>,
    /// The fallback pool.
    default_pool: String,
    /// Pools with their sources, in file order.
    pools: Vec<PoolSpec>,
    /// Re-resolution period of `dns` pools.
    dns_refresh: Duration,
    /// Connect timeout for remote replicas.
    connect_timeout: Duration,
}

impl RoutingTable {
    /// Validates `config` against `catalog`.
    pub fn new(config: &RoutingConfig, catalog: &Catalog) -> Result<Self, RouterError> {
        let err = |msg: String| Err(RouterError::Routing(msg));
        let mut names = HashSet::new();
        let mut pools = Vec::with_capacity(config.pools.len());
        for pool in &config.pools {
            if !names.insert(pool.name.as_str()) {
                return err(format!("pool `{}` is defined twice", pool.name));
            }
            pools.push(PoolSpec {
                name: pool.name.clone(),
                source: pool_source(pool)?,
            });
        }
        if config.default_pool.is_empty() {
            return err("`default_pool` is required".into());
        }
        if !names.contains(config.default_pool.as_str()) {
            return err(format!(
                "default_pool `{}` is not a defined pool",
                config.default_pool
            ));
        }
        for (i, rule) in config.rules.iter().enumerate() {
            let label = rule
                .name
                .clone()
                .unwrap_or_else(|| format!("rule #{}", i + 1));
            if !names.contains(rule.pool.as_str()) {
                return err(format!("{label}: pool `{}` is not defined", rule.pool));
            }
            if rule.scenarios.is_empty() && rule.groups.is_empty() && rule.languages.is_empty() {
                return err(format!(
                    "{label}: a rule needs scenarios, groups or languages"
                ));
            }
            if let Some(s) = rule.scenarios.iter().find(|s| catalog.get(s).is_none()) {
                return err(format!("{label}: unknown scenario `{s}`"));
            }
            if let Some(g) = rule.groups.iter().find(|g| !catalog.has_group(g)) {
                return err(format!("{label}: unknown group `{g}`"));
            }
        }
        if config.dns_refresh_secs == 0 || config.connect_timeout_ms == 0 {
            return err("`dns_refresh_secs` and `connect_timeout_ms` must be > 0".into());
        }
        Ok(Self {
            rules: config.rules.clone(),
            default_pool: config.default_pool.clone(),
            pools,
            dns_refresh: Duration::from_secs(config.dns_refresh_secs),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        })
    }

    /// The pool for a request: the first matching rule's, else the default.
    pub fn route(&self, key: RouteKey<'_>) -> &str {
        self.rules
            .iter()
            .find(|rule| matches(rule, key))
            .map_or(self.default_pool.as_str(), |rule| rule.pool.as_str())
    }

    /// The pool that serves requests no rule matches (and chats that name none).
    pub fn default_pool(&self) -> &str {
        &self.default_pool
    }

    /// The pools to build.
    pub fn pools(&self) -> &[PoolSpec] {
        &self.pools
    }

    /// Re-resolution period of `dns` pools.
    pub fn dns_refresh(&self) -> Duration {
        self.dns_refresh
    }

    /// Connect timeout for remote replicas.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// Whether every condition `rule` states holds for `key`.
fn matches(rule: &RuleConfig, key: RouteKey<'_>) -> bool {
    let scenario_ok = rule.scenarios.is_empty() || rule.scenarios.iter().any(|s| s == key.scenario);
    let group_ok = rule.groups.is_empty()
        || key
            .group
            .is_some_and(|g| rule.groups.iter().any(|x| x == g));
    let language_ok = rule.languages.is_empty() || rule.languages.contains(&key.language);
    scenario_ok && group_ok && language_ok
}

/// Checks that a pool names exactly one address source, and that it is well formed.
fn pool_source(pool: &PoolConfig) -> Result<PoolSource, RouterError> {
    let err = |msg: &str| Err(RouterError::Routing(format!("pool `{}`: {msg}", pool.name)));
    let given = usize::from(!pool.endpoints.is_empty())
        + usize::from(pool.dns.is_some())
        + usize::from(pool.local);
    if given != 1 {
        return err("give exactly one of `endpoints`, `dns` or `local = true`");
    }
    if let Some(dns) = &pool.dns {
        let port = dns.rsplit_once(':').and_then(|(host, port)| {
            (!host.is_empty())
                .then(|| port.parse::<u16>().ok())
                .flatten()
        });
        return match port {
            Some(_) => Ok(PoolSource::Dns(dns.clone())),
            None => err("`dns` must be `host:port`"),
        };
    }
    if pool.local {
        return Ok(PoolSource::Local);
    }
    for url in &pool.endpoints {
        let parsed = tonic::transport::Endpoint::from_shared(url.clone());
        // Plain HTTP/2 only: TLS between router and judges is left to the cluster's mesh.
        if parsed.is_err() || !url.starts_with("http://") {
            return err(&format!("endpoint `{url}` is not an http:// URL"));
        }
    }
    Ok(PoolSource::Endpoints(pool.endpoints.clone()))
}
