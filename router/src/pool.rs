//! A judge pool: its replicas, least-in-flight balancing, failover before the first event,
//! and periodic DNS re-resolution of the replica set.
//!
//! Balancing is hand-rolled rather than `tower::balance`: tower's balancer picks a replica
//! inside `poll_ready` and hides which one served, while the router must (a) retry on a
//! *different* replica of the same pool, (b) only while nothing has been relayed yet — a
//! condition on the first item of a response *stream*, which `tower::retry` never sees —
//! and (c) report the replica in logs. A least-in-flight pick over a small replica list
//! (what `tower::load::PendingRequests` measures) does the same job in a few lines here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::backend::{Connect, JudgeBackend, RemoteBackend};
use crate::error::RouterError;

/// How long a replica that failed with UNAVAILABLE is tried last.
const EJECT_FOR: Duration = Duration::from_secs(2);

/// One replica of a pool.
struct Replica {
    /// Address or `local`, for logs and for matching DNS results to existing replicas.
    name: String,
    /// How requests reach it.
    backend: Arc<dyn JudgeBackend>,
    /// Requests (and open streams) it is serving now: the balancing load measure.
    in_flight: Arc<AtomicUsize>,
    /// Until when it is tried last after an UNAVAILABLE failure (passive health check).
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    /// A fresh replica with no load.
    fn new(name: String, backend: Arc<dyn JudgeBackend>) -> Arc<Self> {
        Arc::new(Self {
            name,
            backend,
            in_flight: Arc::new(AtomicUsize::new(0)),
            down_until: Mutex::new(None),
        })
    }

    /// Whether it failed recently.
    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t > now)
    }

    /// Marks it as failed (or recovered).
    fn set_down(&self, until: Option<Instant>) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// Counts one request against a replica's load until dropped (when the response or its
/// relayed stream ends, or the client goes away).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Increments `counter` for the guard's lifetime.
    fn start(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A successful call: the result, which replica served it, and its load guard.
#[derive(Debug)]
pub struct Served<T> {
    /// What the replica answered.
    pub value: T,
    /// The replica's name.
    pub replica: String,
    /// Keep alive as long as the replica is still working on the request.
    pub in_flight: InFlight,
}

/// The replicas of one pool.
pub struct Pool {
    /// The pool's name from the routing config.
    name: String,
    /// The current replica set; replaced wholesale by DNS refreshes (readers clone the Arc).
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    /// Rotates the starting point among equally loaded replicas (round-robin on ties).
    next: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("replicas", &self.replica_names())
            .finish()
    }
}

impl Pool {
    /// A pool with a fixed replica set (named backends).
    pub fn fixed(name: &str, replicas: Vec<(String, Arc<dyn JudgeBackend>)>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            replicas: RwLock::new(Arc::new(
                replicas
                    .into_iter()
                    .map(|(n, b)| Replica::new(n, b))
                    .collect(),
            )),
            next: AtomicUsize::new(0),
        })
    }

    /// A pool of fixed `http://` (or, with TLS, `https://`) URLs.
    pub fn endpoints(
        name: &str,
        urls: &[String],
        connect: &Connect,
    ) -> Result<Arc<Self>, RouterError> {
        let mut replicas: Vec<(String, Arc<dyn JudgeBackend>)> = Vec::with_capacity(urls.len());
        for url in urls {
            replicas.push((url.clone(), Arc::new(RemoteBackend::new(url, connect)?)));
        }
        Ok(Self::fixed(name, replicas))
    }

    /// A pool whose replicas are every address `host_port` resolves to, resolved now and then
    /// every `refresh` by a background task that ends when the pool is dropped. A failed
    /// resolution keeps the previous set (and is logged), so a DNS hiccup drains nothing.
    pub async fn dns(
        name: &str,
        host_port: &str,
        refresh: Duration,
        connect: &Connect,
    ) -> Arc<Self> {
        let pool = Self::fixed(name, Vec::new());
        pool.resolve(host_port, connect).await;
        let weak = Arc::downgrade(&pool);
        let host_port = host_port.to_owned();
        tokio::spawn(refresh_loop(weak, host_port, refresh, connect.clone()));
        pool
    }

    /// Probes every replica's readiness at once; a replica that is not ready is tried last
    /// (as after an UNAVAILABLE failure) until a later probe finds it ready. True when at
    /// least one replica is ready: the pool can serve.
    pub async fn probe(&self) -> bool {
        let replicas = self.snapshot();
        let answers = futures::future::join_all(replicas.iter().map(|r| r.backend.ready())).await;
        let now = Instant::now();
        for (replica, ready) in replicas.iter().zip(&answers) {
            if *ready {
                if replica.is_down(now) {
                    tracing::info!(pool = %self.name, replica = %replica.name, "replica ready");
                }
                replica.set_down(None);
            } else {
                replica.set_down(Some(now + EJECT_FOR));
            }
        }
        answers.into_iter().any(|ready| ready)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current replicas' names.
    pub fn replica_names(&self) -> Vec<String> {
        self.snapshot().iter().map(|r| r.name.clone()).collect()
    }

    /// The current replica set.
    fn snapshot(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves `host_port` once and swaps in the new set, keeping replicas (their channels
    /// and load counters) whose address is still present.
    async fn resolve(&self, host_port: &str, connect: &Connect) {
        let mut addrs: Vec<SocketAddr> = match tokio::net::lookup_host(host_port).await {
            Ok(found) => found.collect(),
            Err(e) => {
                tracing::warn!(pool = %self.name, %host_port, "DNS resolution failed, keeping {} replicas: {e}", self.snapshot().len());
                return;
            }
        };
        addrs.sort();
        addrs.dedup();
        let old = self.snapshot();
        let mut fresh = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let name = addr.to_string();
            if let Some(kept) = old.iter().find(|r| r.name == name) {
                fresh.push(kept.clone());
                continue;
            }
            match RemoteBackend::new(&name, connect) {
                Ok(backend) => fresh.push(Replica::new(name, Arc::new(backend))),
                Err(e) => tracing::warn!(pool = %self.name, "skipping resolved address: {e}"),
            }
        }
        if fresh.len() != old.len() || fresh.iter().zip(old.iter()).any(|(a, b)| a.name != b.name) {
            tracing::info!(pool = %self.name, replicas = ?fresh.iter().map(|r| &r.name).collect::<Vec<_>>(), "replica set changed");
        }
        *self.replicas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
    }

    /// The replica to try next: not yet tried, healthy before recently failed, then the
    /// fewest in-flight requests, ties broken round-robin.
    fn pick(&self, tried: &[String]) -> Option<Arc<Replica>> {
        let replicas = self.snapshot();
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        (0..n)
            .map(|i| &replicas[(start + i) % n])
            .filter(|r| !tried.contains(&r.name))
            .min_by_key(|r| (r.is_down(now), r.in_flight.load(Ordering::Relaxed)))
            .cloned()
    }

    /// Runs `attempt` on the best replica, and again on another one while it fails with
    /// UNAVAILABLE (a replica down or unreachable), until every replica was tried or
    /// `deadline` passes. `attempt` must only return `Ok` once something can be relayed
    /// (for a stream: its first event), so no retry ever repeats output a client has seen.
    pub async fn call<T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        mut attempt: F,
    ) -> Result<Served<T>, RouterError>
    where
        F: FnMut(Arc<dyn JudgeBackend>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<RouterError> = None;
        while let Some(replica) = self.pick(&tried) {
            let in_flight = InFlight::start(&replica.in_flight);
            let future = attempt(replica.backend.clone());
            let result = match deadline {
                Some(at) => tokio::time::timeout_at(at, future)
                    .await
                    .map_err(|_| RouterError::DeadlineExceeded)?,
                None => future.await,
            };
            match result {
                Ok(value) => {
                    replica.set_down(None);
                    return Ok(Served {
                        value,
                        replica: replica.name.clone(),
                        in_flight,
                    });
                }
                Err(status) if status.code() == Code::Unavailable => {
                    tracing::warn!(pool = %self.name, replica = %replica.name, "replica unavailable, trying another: {}", status.message());
                    replica.set_down(Some(Instant::now() + EJECT_FOR));
                    tried.push(replica.name.clone());
                    last = Some(RouterError::Upstream {
                        replica: replica.name.clone(),
                        status,
                    });
                }
                Err(status) => {
                    return Err(RouterError::Upstream {
                        replica: replica.name.clone(),
                        status,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| RouterError::NoReplica {
            pool: self.name.clone(),
        }))
    }
}

/// Re-resolves a `dns` pool every `refresh` until the pool is dropped.
async fn refresh_loop(pool: Weak<Pool>, host_port: String, refresh: Duration, connect: Connect) {
    let mut ticker = tokio::time::interval_at(Instant::now() + refresh, refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.resolve(&host_port, &connect).await;
    }
}
