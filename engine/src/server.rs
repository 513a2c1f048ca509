//! Starting the engine: read the configuration, claim the data directory, serve HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cgroup::CgroupReader;
use crate::config::{ConfigError, EngineConfig};
use crate::engine::{Engine, EngineOptions};
use crate::http::{router, EngineState};

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
}

/// The admin token to use (`None`: empty or absent), or why the engine must not start:
/// no token is acceptable only on a loopback address.
pub fn admin_token_for(
    listen: SocketAddr,
    token: Option<String>,
) -> Result<Option<String>, StartError> {
    let token = token.filter(|t| !t.trim().is_empty());
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(StartError::NoAdminToken(listen));
    }
    Ok(token)
}

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the databases live.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Admin token; `None` disables admin authentication.
    pub admin_token: Option<String>,
    /// Configuration file, if any.
    pub config: Option<PathBuf>,
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
    let admin_token = admin_token_for(opts.listen, opts.admin_token.clone())?;
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
    let engine = Engine::open(
        &opts.data_dir,
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
            ..Default::default()
        },
    )
    .map_err(|e| StartError::Engine(e.to_string()))?;
    tracing::info!(cpu = ?cgroup.cpu(), memory = ?cgroup.memory(), tenant = ?config.tenant, tier = ?config.tier, %instance_id, "engine starting");
    let mut state = EngineState::new(Arc::new(engine), config, cgroup, instance_id, admin_token)?;
    state.tenant_cgroup = tenant_cgroup;
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: opts.listen,
            source,
        })?;
    tracing::info!(addr = %opts.listen, "serving HTTP");
    // Metering reaches the catalog every few seconds, and once more on the way out.
    let engine = state.engine.clone();
    let flusher = tokio::spawn(async move {
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
    });
    let engine = state.engine.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    flusher.abort();
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
    served.map_err(|source| StartError::Listen {
        addr: opts.listen,
        source,
    })
}

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
    fn no_admin_token_only_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(matches!(
            admin_token_for(any, None),
            Err(StartError::NoAdminToken(_))
        ));
        assert!(matches!(
            admin_token_for(any, Some("  ".into())),
            Err(StartError::NoAdminToken(_))
        ));
        assert_eq!(
            admin_token_for(any, Some("t".into())).unwrap().as_deref(),
            Some("t")
        );
        assert_eq!(admin_token_for(lo, None).unwrap(), None);
        assert_eq!(admin_token_for(lo6, Some(String::new())).unwrap(), None);
    }
}
