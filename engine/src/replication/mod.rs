//! Hot standbys and failover (`docs/ha.md`). A member starts as a standby and waits for
//! its member agent to say what it is (`PUT /v1/admin/role`, repeated on every Lease
//! renewal). A standby follows its primary ([`follow`]) and applies what it streams to
//! its own copies ([`apply`]); a primary captures every commit of every file ([`tap`],
//! [`source`]) and streams it to its standbys ([`stream`], [`wire`]). A primary that is
//! told it is a standby starts again in place (the same process runs its own binary
//! afresh, so no container restart and no back-off) and comes back as a standby that
//! takes a base of everything: history nobody acknowledged is never served.

pub mod apply;
pub mod follow;
pub mod source;
pub mod stream;
pub mod tap;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantdb_engine_api::replication::{ReplicationConfig, ReplicationStatus, Role, RoleRequest};
use tokio_util::sync::CancellationToken;

use crate::admin_tokens::AdminTokens;
use crate::error::{EngineError, Result};

pub use source::{NotAcknowledged, Source};

thread_local! {
    static NOT_ACKNOWLEDGED: std::cell::RefCell<Option<(std::time::Instant, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// What a `wal_hook` returns for a commit `source` did not acknowledge. SQLite turns any
/// hook error into a plain `SQLITE_ERROR` of the statement, so the reason waits on this
/// thread for [`take_not_acknowledged`], which the statement's error conversion calls.
pub fn hook_result(r: std::result::Result<(), NotAcknowledged>) -> rusqlite::Result<()> {
    r.map_err(|e| {
        NOT_ACKNOWLEDGED
            .with(|c| *c.borrow_mut() = Some((std::time::Instant::now(), e.to_string())));
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR), None)
    })
}

/// Why the commit that just failed on this thread was not acknowledged (a reason left
/// more than a second ago belongs to no statement still being answered).
pub fn take_not_acknowledged() -> Option<String> {
    NOT_ACKNOWLEDGED
        .with(|c| c.borrow_mut().take())
        .filter(|(at, _)| at.elapsed() < Duration::from_secs(1))
        .map(|(_, why)| why)
}

/// A commit whose acknowledgement the request awaits: its source, file and transaction.
pub type Pending = (Arc<Source>, Arc<tap::Tap>, u64);

thread_local! {
    static DEFERRING: std::cell::RefCell<Option<Vec<Pending>>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` (a request's statements, on a worker) with the waits for standbys deferred:
/// the commits it makes are returned, to be awaited with [`acknowledged`] before the
/// request answers, while the worker runs the next request. So commits made close
/// together are acknowledged together, and a worker never sits waiting for the network.
pub fn deferring<T>(f: impl FnOnce() -> T) -> (T, Vec<Pending>) {
    DEFERRING.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let out = f();
    let pending = DEFERRING
        .with(|d| d.borrow_mut().take())
        .unwrap_or_default();
    (out, pending)
}

/// Inside [`deferring`], record the wait for `txid` of `tap` instead of waiting: true.
fn defer(source: &Arc<Source>, tap: &Arc<tap::Tap>, txid: u64) -> bool {
    DEFERRING.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => {
            list.push((source.clone(), tap.clone(), txid));
            true
        }
        None => false,
    })
}

/// Await the acknowledgements of deferred commits; the first that does not come (or a
/// primary fenced meanwhile) is the request's error.
pub async fn acknowledged(pending: Vec<Pending>) -> std::result::Result<(), NotAcknowledged> {
    for (source, tap, txid) in pending {
        if !tap.acked_async(txid, source.ack_timeout()).await {
            return Err(NotAcknowledged::NotReplicated(source.ack_timeout()));
        }
        if !source.writable() {
            return Err(NotAcknowledged::Fenced);
        }
    }
    Ok(())
}

/// Opens the engine as primary over the files the standby kept, with `source`
/// capturing its commits; what the server gives the member.
pub type Promote =
    Box<dyn Fn(Arc<Source>) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

enum Phase {
    Waiting,
    Standby {
        url: String,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
    Primary(Arc<Source>),
    Leaving,
}

/// This engine as a member of a replicated tenant.
pub struct Member {
    cfg: ReplicationConfig,
    tokens: Arc<AdminTokens>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The standby's copies.
    pub replica: Arc<apply::Replica>,
    /// The follower's progress.
    pub progress: Arc<follow::Progress>,
    phase: tokio::sync::Mutex<Phase>,
    primary: Mutex<Option<Arc<Source>>>,
    promote: Promote,
    dir: PathBuf,
}

impl Member {
    /// A member over data directory `dir`; `peer_ca` is the tenant's CA (PEM) the
    /// primary's certificate is checked against (none: plain HTTP, loopback tests).
    pub fn new(
        cfg: ReplicationConfig,
        dir: &Path,
        tokens: Arc<AdminTokens>,
        peer_ca: Option<&[u8]>,
        promote: Promote,
    ) -> Result<Self> {
        let tls = peer_ca
            .map(|pem| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
                    let cert: rustls::pki_types::CertificateDer<'static> =
                        cert.map_err(|e| EngineError::BadRequest(format!("peer CA: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| EngineError::BadRequest(format!("peer CA: {e}")))?;
                }
                Ok::<_, EngineError>(Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                ))
            })
            .transpose()?;
        Ok(Member {
            cfg,
            tokens,
            tls,
            replica: Arc::new(apply::Replica::open(dir)?),
            progress: Arc::default(),
            phase: tokio::sync::Mutex::new(Phase::Waiting),
            primary: Mutex::new(None),
            promote,
            dir: dir.to_path_buf(),
        })
    }

    /// The primary's replication, once this member is primary.
    pub fn source(&self) -> Option<Arc<Source>> {
        self.primary.lock().ok()?.clone()
    }

    /// Take the role the agent gives.
    pub async fn set_role(&self, req: RoleRequest) -> Result<ReplicationStatus> {
        let seen = self.progress.epoch.load(Ordering::SeqCst);
        if req.epoch < seen {
            return Err(EngineError::Conflict(format!(
                "epoch {} is older than epoch {seen}, already seen",
                req.epoch
            )));
        }
        let mut phase = self.phase.lock().await;
        match (req.role, &*phase) {
            (_, Phase::Leaving) => {
                return Err(EngineError::Conflict(
                    "this member is stepping down and restarting as a standby".into(),
                ))
            }
            (Role::Primary, Phase::Primary(source)) => {
                source.epoch.fetch_max(req.epoch, Ordering::SeqCst);
                source.renew(valid_for(&req)?);
            }
            (Role::Primary, _) => {
                let valid = valid_for(&req)?;
                if let Phase::Standby { stop, task, .. } =
                    std::mem::replace(&mut *phase, Phase::Waiting)
                {
                    stop.cancel();
                    let _ = task.await;
                }
                let replica = self.replica.clone();
                tokio::task::spawn_blocking(move || replica.close())
                    .await
                    .map_err(EngineError::internal)?;
                let source = Source::new(&self.cfg, req.epoch, valid);
                (self.promote)(source.clone()).await?;
                self.progress.epoch.store(req.epoch, Ordering::SeqCst);
                *self.primary.lock().map_err(EngineError::internal)? = Some(source.clone());
                tracing::info!(epoch = req.epoch, "promoted: this member is the primary");
                *phase = Phase::Primary(source);
            }
            (Role::Standby, Phase::Primary(source)) => {
                source.fence_now();
                tracing::warn!(epoch = req.epoch, "deposed: restarting as a standby");
                let replica = self.replica.clone();
                let _ = tokio::task::spawn_blocking(move || replica.forget()).await;
                *phase = Phase::Leaving;
                tokio::spawn(async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    restart_in_place();
                });
            }
            (Role::Standby, current) => {
                let url = req
                    .primary_url
                    .clone()
                    .ok_or_else(|| EngineError::BadRequest("a standby needs primaryUrl".into()))?;
                self.progress.epoch.store(req.epoch, Ordering::SeqCst);
                let same = matches!(current, Phase::Standby { url: u, .. } if *u == url);
                if !same {
                    if let Phase::Standby { stop, task, .. } =
                        std::mem::replace(&mut *phase, Phase::Waiting)
                    {
                        stop.cancel();
                        let _ = task.await;
                    }
                    let stop = CancellationToken::new();
                    let up = follow::Upstream {
                        url: url.clone(),
                        tokens: self.tokens.tokens(),
                        tls: self.tls.clone(),
                    };
                    let task = tokio::spawn(follow::follow(
                        self.replica.clone(),
                        self.progress.clone(),
                        up,
                        stop.clone(),
                    ));
                    tracing::info!(primary = %url, epoch = req.epoch, "following");
                    *phase = Phase::Standby { url, stop, task };
                }
            }
        }
        drop(phase);
        Ok(self.status())
    }

    /// Where this member stands.
    pub fn status(&self) -> ReplicationStatus {
        match self.source() {
            Some(s) => {
                let (lag_transactions, lag_bytes) = s.lag();
                ReplicationStatus {
                    role: Some(Role::Primary),
                    epoch: s.epoch.load(Ordering::SeqCst),
                    writable: s.writable(),
                    streaming: false,
                    caught_up: true,
                    standbys: s.standbys.load(Ordering::SeqCst),
                    durability: s.durability,
                    unreplicated_commits: s.unreplicated.load(Ordering::Relaxed),
                    files: s.positions(),
                    lag_transactions,
                    lag_bytes,
                    last_applied_ms: None,
                }
            }
            None => {
                let p = &self.progress;
                let following = self
                    .phase
                    .try_lock()
                    .map(|ph| matches!(*ph, Phase::Standby { .. }))
                    .unwrap_or(true);
                ReplicationStatus {
                    role: following.then_some(Role::Standby),
                    epoch: p.epoch.load(Ordering::SeqCst),
                    writable: false,
                    streaming: p.streaming.load(Ordering::SeqCst),
                    caught_up: p.caught_up.load(Ordering::SeqCst),
                    standbys: 0,
                    durability: self.cfg.durability,
                    unreplicated_commits: 0,
                    files: self.replica.positions(),
                    lag_transactions: p.lag_transactions.load(Ordering::Relaxed),
                    lag_bytes: p.lag_bytes.load(Ordering::Relaxed),
                    last_applied_ms: Some(p.last_applied_ms.load(Ordering::Relaxed))
                        .filter(|ms| *ms > 0),
                }
            }
        }
    }

    /// The admin tokens in force (the replication plane checks them).
    pub fn admin_tokens(&self) -> &AdminTokens {
        &self.tokens
    }

    /// Scratch space for bases being sent.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
}

/// Run this engine's binary again in this process, with the same arguments and
/// environment: every file and socket closes (Rust and SQLite open them close-on-exec)
/// and the engine starts as a standby. Exits when that fails (the kubelet restarts it).
fn restart_in_place() {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe();
    if let Ok(exe) = exe {
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        tracing::error!(error = %err, "restarting in place failed; exiting");
    }
    std::process::exit(75);
}

/// How long a primary may acknowledge from now: `validForMillis`, cut to
/// `validUntilMonotonicMillis` when given.
fn valid_for(req: &RoleRequest) -> Result<Duration> {
    let given = req
        .valid_for_millis
        .filter(|ms| (1..=60_000).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            EngineError::BadRequest("a primary needs validForMillis between 1 and 60000".into())
        })?;
    Ok(match req.valid_until_monotonic_millis {
        Some(until) => given.min(Duration::from_millis(
            until.saturating_sub(tenantdb_engine_api::replication::monotonic_millis()),
        )),
        None => given,
    })
}
