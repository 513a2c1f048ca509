//! Starting the engine: read the configuration, claim the data directory, serve HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admin_tokens::AdminTokens;
use crate::cgroup::CgroupReader;
use crate::config::{ConfigError, EngineConfig};
use crate::engine::{Engine, EngineOptions};
use crate::http::{router, EngineState};
use crate::replication::Member;
use crate::tls::{CertResolver, TlsFiles, TlsListener};
use arc_swap::ArcSwap;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory is not usable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The catalog or the seed could not be opened.
    #[error("opening the engine: {0}")]
    Engine(String),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Beyond loopback without an admin token, every caller would be an admin.
    #[error("refusing to listen on {0} without an admin token: every caller would be an admin (give --admin-token, or listen on 127.0.0.1)")]
    NoAdminToken(SocketAddr),
    /// Beyond loopback without TLS, tokens and statements would cross the network in clear.
    #[error("refusing to listen on {0} without TLS: tokens and SQL would cross the network in clear (give --tls-cert and --tls-key, or listen on 127.0.0.1)")]
    NoTls(SocketAddr),
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin token file cannot be used.
    #[error(transparent)]
    AdminTokens(#[from] crate::admin_tokens::AdminTokenError),
}

/// Plain HTTP is for loopback only: refuse any other address without TLS.
pub fn check_plain_http(listen: SocketAddr, tls: Option<&TlsFiles>) -> Result<(), StartError> {
    if tls.is_none() && !listen.ip().is_loopback() {
        return Err(StartError::NoTls(listen));
    }
    Ok(())
}

/// The admin tokens to accept, from `file` (one per line, read again when it changes)
/// or `token`, or why the engine must not start: no token is acceptable only on a
/// loopback address, and a token file must hold one.
pub fn admin_tokens_for(
    listen: SocketAddr,
    token: Option<String>,
    file: Option<PathBuf>,
) -> Result<AdminTokens, StartError> {
    let tokens = match file {
        Some(path) => AdminTokens::from_file(path)?,
        None => AdminTokens::fixed(token),
    };
    if !tokens.required() && !listen.ip().is_loopback() {
        return Err(StartError::NoAdminToken(listen));
    }
    Ok(tokens)
}

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the databases live.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Admin token; `None` (and no file) disables admin authentication.
    pub admin_token: Option<String>,
    /// A file of admin tokens, one per line, read again when it changes (rotation).
    pub admin_token_file: Option<PathBuf>,
    /// Configuration file, if any.
    pub config: Option<PathBuf>,
    /// Certificate and key to serve HTTPS with; plain HTTP (loopback only) without.
    pub tls: Option<TlsFiles>,
    /// The tenant's CA (PEM): a standby checks its primary's certificate against it.
    pub peer_ca: Option<PathBuf>,
    /// Standalone as root: make `<this>/<tenant>` under the cgroup root with the tier's
    /// CPU, memory and IO limits and run the engine in it.
    pub cgroup_parent: Option<String>,
}

/// The volume's identity: read from `instance-id`, or written there on first use.
pub fn instance_id(data_dir: &Path) -> Result<String, std::io::Error> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("{:032x}", rand::random::<u128>());
            let tmp = data_dir.join("instance-id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

/// Make the tenant's own cgroup under `parent` and move this process into it. A failure
/// (not root, a read-only cgroup filesystem as in most pods) is logged and the engine runs
/// on in the cgroup it has: the pod's, which Kubernetes sized from the tier.
fn tenant_cgroup(
    cgroup: &CgroupReader,
    parent: &str,
    config: &EngineConfig,
    data_dir: &Path,
) -> Option<crate::cgroup::TenantCgroup> {
    let tenant = config.tenant.as_deref().unwrap_or("standalone");
    let limits = crate::cgroup::TenantLimits {
        cpu_millis: config.limits.cpu_millis,
        priority: config.priority,
        memory_bytes: config.limits.memory_bytes,
        iops: config.limits.iops,
        io_bytes_per_second: config.limits.io_bytes_per_second,
        device: crate::cgroup::block_device(data_dir),
    };
    let made = cgroup
        .create_tenant(parent, tenant, &limits)
        .and_then(|c| c.enter(std::process::id()).map(|()| c));
    match made {
        Ok(c) => {
            tracing::info!(paths = ?c.paths, written = ?c.written, "running in the tenant's own cgroup");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no tenant cgroup: limits come from the cgroup the engine was started in");
            None
        }
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let admin_tokens = Arc::new(admin_tokens_for(
        opts.listen,
        opts.admin_token.clone(),
        opts.admin_token_file.clone(),
    )?);
    check_plain_http(opts.listen, opts.tls.as_ref())?;
    let tls = opts
        .tls
        .clone()
        .map(CertResolver::load)
        .transpose()?
        .map(Arc::new);
    let config = match &opts.config {
        Some(path) => EngineConfig::load(path)?,
        None => EngineConfig::default(),
    };
    let instance_id = instance_id(&opts.data_dir).map_err(|source| StartError::DataDir {
        path: opts.data_dir.display().to_string(),
        source,
    })?;
    let cgroup = CgroupReader::for_self();
    let tenant_cgroup = opts
        .cgroup_parent
        .as_deref()
        .and_then(|parent| tenant_cgroup(&cgroup, parent, &config, &opts.data_dir));
    // Moved into its own cgroup, the engine reads its limits from there.
    let cgroup = if tenant_cgroup.is_some() {
        CgroupReader::for_self()
    } else {
        cgroup
    };
    let memory_limit = cgroup.memory().limit_bytes;
    crate::isolation::apply_sqlite_heap_budget(crate::isolation::sqlite_heap_budget(memory_limit));
    let opening = Arc::new(Opening {
        data_dir: opts.data_dir.clone(),
        config: config.clone(),
        cgroup,
        instance_id,
        tenant_cgroup: std::sync::Mutex::new(tenant_cgroup),
        admin_tokens: admin_tokens.clone(),
        state: std::sync::OnceLock::new(),
        tasks: std::sync::Mutex::new(Vec::new()),
    });
    let app: Arc<ArcSwap<axum::Router>> = Arc::new(ArcSwap::from_pointee(axum::Router::new()));
    match config.replication.clone() {
        None => {
            let state = opening.open(None, None)?;
            app.store(Arc::new(router(state)));
        }
        Some(cfg) => {
            let peer_ca = opts
                .peer_ca
                .as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|source| StartError::DataDir {
                        path: p.display().to_string(),
                        source,
                    })
                })
                .transpose()?;
            let member_cell: Arc<std::sync::OnceLock<Arc<Member>>> = Arc::default();
            let promote: crate::replication::Promote = {
                let (opening, app, cell) = (opening.clone(), app.clone(), member_cell.clone());
                Box::new(move |source: Arc<crate::replication::Source>| {
                    let (opening, app, cell) = (opening.clone(), app.clone(), cell.clone());
                    Box::pin(async move {
                        let opened = source.clone();
                        let member = cell.get().cloned();
                        let state =
                            tokio::task::spawn_blocking(move || opening.open(Some(opened), member))
                                .await
                                .map_err(crate::error::EngineError::internal)?
                                .map_err(|e| crate::error::EngineError::internal(e.to_string()))?;
                        // Every answer says which primary gave it: a client can tell an
                        // acknowledgement of the new primary from one of the old.
                        let epoch = axum::http::HeaderValue::from(
                            source.epoch.load(std::sync::atomic::Ordering::SeqCst),
                        );
                        let mut routes = router(state).layer(axum::middleware::map_response(
                            move |mut r: axum::response::Response| {
                                let epoch = epoch.clone();
                                async move {
                                    r.headers_mut().insert(EPOCH_HEADER, epoch);
                                    r
                                }
                            },
                        ));
                        if let Some(member) = cell.get() {
                            routes = crate::http::replication::routes(member.clone()).merge(routes);
                        }
                        app.store(Arc::new(routes));
                        Ok(())
                    })
                })
            };
            let member = Arc::new(
                Member::new(
                    cfg,
                    &opts.data_dir,
                    admin_tokens.clone(),
                    peer_ca.as_deref(),
                    promote,
                )
                .map_err(|e| StartError::Engine(e.to_string()))?,
            );
            let _ = member_cell.set(member.clone());
            tracing::info!("replicated tenant: waiting as a standby for the member agent to give this member its role");
            app.store(Arc::new(crate::http::replication::standby_router(member)));
        }
    }
    let listen = opts.listen;
    let listen_error = move |source| StartError::Listen {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_error)?;
    let token_reloader = crate::reload::every(
        crate::reload::EVERY,
        "admin tokens changed on disk: the new set is in force",
        "admin tokens not reloaded: the previous set stays",
        move || admin_tokens.reload(),
    );
    let current = app.clone();
    let service = axum::Router::new().fallback_service(tower::service_fn(
        move |req: axum::extract::Request| {
            let r = current.load_full();
            async move {
                use tower::ServiceExt;
                r.as_ref().clone().oneshot(req).await
            }
        },
    ));
    let served = match tls {
        Some(resolver) => {
            tracing::info!(addr = %opts.listen, "serving HTTPS");
            let config = Arc::new(crate::tls::server_config(resolver.clone())?);
            let reloader = crate::reload::every(
                crate::reload::EVERY,
                "TLS certificate changed on disk: serving the new one",
                "TLS certificate not reloaded: still serving the previous one",
                move || resolver.reload(),
            );
            let listener = TlsListener::new(listener, config).map_err(listen_error)?;
            let served = axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await;
            reloader.abort();
            served
        }
        None => {
            tracing::info!(addr = %opts.listen, "serving plain HTTP on loopback");
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    token_reloader.abort();
    opening.close().await;
    served.map_err(listen_error)
}

/// What opening the engine needs, kept until it is opened: at once for a tenant of one
/// member, at promotion for a replicated one.
struct Opening {
    data_dir: PathBuf,
    config: EngineConfig,
    cgroup: CgroupReader,
    instance_id: String,
    tenant_cgroup: std::sync::Mutex<Option<crate::cgroup::TenantCgroup>>,
    admin_tokens: Arc<AdminTokens>,
    state: std::sync::OnceLock<Arc<EngineState>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Opening {
    /// Open the engine over the data directory (with `replication` streaming its
    /// commits when this is a replicated tenant's primary) and start its background work.
    fn open(
        &self,
        replication: Option<Arc<crate::replication::Source>>,
        member: Option<Arc<Member>>,
    ) -> Result<Arc<EngineState>, StartError> {
        let config = &self.config;
        let memory_limit = self.cgroup.memory().limit_bytes;
        let engine = Engine::open(
            &self.data_dir,
            EngineOptions {
                seed_sql: config.seed_sql.clone(),
                storage_bytes: config.limits.storage_bytes,
                iops: config.limits.iops,
                io_bytes_per_second: config.limits.io_bytes_per_second,
                cache_kib_per_connection: crate::isolation::cache_kib_per_connection(memory_limit),
                stream_idle_timeout: config.stream_idle_timeout(),
                backup: config.backup.clone().map(|b| {
                    (
                        b,
                        config.tenant.clone().unwrap_or_else(|| "standalone".into()),
                    )
                }),
                replication: replication.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| StartError::Engine(e.to_string()))?;
        tracing::info!(cpu = ?self.cgroup.cpu(), memory = ?self.cgroup.memory(), tenant = ?config.tenant, tier = ?config.tier, instance_id = %self.instance_id, "engine starting");
        let mut state = EngineState::new(
            Arc::new(engine),
            config.clone(),
            self.cgroup.clone(),
            self.instance_id.clone(),
            None,
        )?;
        state.tenant_cgroup = self
            .tenant_cgroup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        state.admin_tokens = self.admin_tokens.clone();
        state.member = member;
        let state = Arc::new(state);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Metering reaches the catalog every few seconds, and once more on the way out.
        let engine = state.engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
            loop {
                tick.tick().await;
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.flush_usage()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "flushing usage"),
                    Err(e) => tracing::warn!(error = %e, "flushing usage"),
                }
            }
        }));
        if let Some(source) = replication {
            let engine = state.engine.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let (s, e) = (source.clone(), engine.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        s.checkpoint_over(CHECKPOINT_FRAMES, &|f| !e.checkpoints_itself(f))
                    })
                    .await;
                }
            }));
        }
        let _ = self.state.set(state.clone());
        Ok(state)
    }

    /// Stop the background work, let backup ship its last commits, flush metering.
    async fn close(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let Some(state) = self.state.get() else {
            return;
        };
        let engine = state.engine.clone();
        if let Some(b) = engine.backup.clone() {
            b.shutdown(std::time::Duration::from_secs(10)).await;
        }
        match tokio::task::spawn_blocking(move || engine.flush_usage()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flushing usage at shutdown: the last seconds of metering are lost")
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing usage at shutdown: the last seconds of metering are lost")
            }
        }
    }
}

/// Response header of a replicated tenant's primary: the Lease epoch it was promoted in.
pub const EPOCH_HEADER: &str = "x-tenantdb-epoch";

/// WAL frames after which a replicated file is checkpointed (SQLite's own default).
const CHECKPOINT_FRAMES: u32 = 1000;

/// How often metered usage is written to the catalog: the most a crash can lose.
pub const USAGE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = instance_id(dir.path()).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(instance_id(dir.path()).unwrap(), first);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(matches!(
            check_plain_http(any, None),
            Err(StartError::NoTls(_))
        ));
        assert!(check_plain_http(lo, None).is_ok());
        let files = TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        };
        assert!(check_plain_http(any, Some(&files)).is_ok());
    }

    #[test]
    fn no_admin_token_only_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(matches!(
            admin_tokens_for(any, None, None),
            Err(StartError::NoAdminToken(_))
        ));
        assert!(matches!(
            admin_tokens_for(any, Some("  ".into()), None),
            Err(StartError::NoAdminToken(_))
        ));
        assert!(admin_tokens_for(any, Some("t".into()), None)
            .unwrap()
            .accepts("t"));
        assert!(!admin_tokens_for(lo, None, None).unwrap().required());
        assert!(!admin_tokens_for(lo6, Some(String::new()), None)
            .unwrap()
            .required());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "a\nb\n").unwrap();
        let t = admin_tokens_for(any, None, Some(file.clone())).unwrap();
        assert!(t.accepts("a") && t.accepts("b"));
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            admin_tokens_for(any, None, Some(file)),
            Err(StartError::AdminTokens(_))
        ));
    }
}
