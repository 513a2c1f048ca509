//! `tenantdb-operator`: runs the controllers on the leader replica and serves
//! `/metrics`, `/healthz` and `/readyz` on every replica.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use tenantdb_operator::engine_client::EngineLocator;
use tenantdb_operator::http::{serve, Probe};
use tenantdb_operator::leader::{LeaderElector, LeaseConfig};
use tenantdb_operator::metrics::Metrics;
use tenantdb_operator::tenant::build::BuildContext;
use tenantdb_operator::tenant::controller::{self, Context};
use tenantdb_operator::tiers::TierTable;
use tenantdb_operator::{lockdown, pdb};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "tenantdb-operator",
    version,
    about = "TenantDB's Kubernetes operator"
)]
struct Args {
    /// Tier table (YAML); the built-in DESIGN §3 table when absent.
    #[arg(long, env = "TENANTDB_TIERS")]
    tiers: Option<PathBuf>,
    /// Image of tenantdb-engine for tenant pods.
    #[arg(
        long,
        env = "TENANTDB_ENGINE_IMAGE",
        default_value = "localhost/tenantdb-engine:dev"
    )]
    engine_image: String,
    /// Image holding `tenantdb-member` (this operator's image), the agent beside each
    /// engine of a replicated tenant.
    #[arg(
        long,
        env = "TENANTDB_MEMBER_IMAGE",
        default_value = "localhost/tenantdb-operator:dev"
    )]
    member_image: String,
    /// Pull policy for the engine image.
    #[arg(
        long,
        env = "TENANTDB_ENGINE_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    engine_image_pull_policy: String,
    /// StorageClass of tenant data volumes (cluster default when empty).
    #[arg(long, env = "TENANTDB_STORAGE_CLASS", default_value = "")]
    storage_class: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TENANTDB_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease (needed when more than one replica runs).
    #[arg(long, env = "TENANTDB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// NetworkPolicy peers (a JSON array) that may reach every engine's port besides the
    /// tenant's namespace and the operator: where Prometheus runs.
    #[arg(long, env = "TENANTDB_MONITORING_PEERS", default_value = "[]")]
    monitoring_peers: String,
    /// Hours an engine's TLS certificate is valid; it is renewed after two thirds of them.
    #[arg(long, env = "TENANTDB_ENGINE_CERT_HOURS", default_value_t = 90 * 24)]
    engine_cert_hours: u32,
    /// Watch this namespace alone (a namespaced install); every namespace when empty.
    #[arg(long, env = "TENANTDB_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Namespace the operator runs in (Lease, NetworkPolicy peer).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tenantdb-system")]
    namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "tenantdb-operator-local")]
    identity: String,
    /// URL of a tenant's engine, with `{tenant}` and `{namespace}` filled in; the
    /// engine Service by cluster DNS unless the operator runs elsewhere.
    #[arg(long, env = "TENANTDB_ENGINE_URL", default_value = tenantdb_operator::engine_client::DEFAULT_ENGINE_URL)]
    engine_url: String,
    /// Currency of tenant bills.
    #[arg(long, env = "TENANTDB_CURRENCY", default_value = "USD")]
    currency: String,
    /// Price list of metered usage (YAML or JSON: perMillionRequests, perGibMonthStorage,
    /// perGibEgress, perCpuHour); the built-in list when absent.
    #[arg(long, env = "TENANTDB_PRICE_LIST")]
    price_list: Option<String>,
    /// Log format: json or text.
    #[arg(long, env = "TENANTDB_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // ring, explicitly: the tree compiles in two rustls providers (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    if args.log_format == "text" {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tiers = match &args.tiers {
        Some(path) => TierTable::load(path)?,
        None => TierTable::default(),
    };
    // Checked before anything starts: a typo here would open engines to no one.
    let monitoring_peers =
        tenantdb_operator::tenant::build::monitoring_peers(&args.monitoring_peers)?;
    let client = Client::try_default().await?;
    let metrics = Metrics::new()?;
    let probe = Arc::new(Probe {
        metrics: metrics.clone(),
        ready: Default::default(),
        tenants: OnceLock::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let http = tokio::spawn(serve(listener, probe.clone(), stop_rx.clone()));
    tokio::spawn(async move {
        stop_requested().await;
        let _ = stop_tx.send(true);
    });

    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                name: "tenantdb-operator".into(),
                namespace: args.namespace.clone(),
                identity: args.identity.clone(),
                lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(10),
            },
        )
    });
    if let Some(e) = &elector {
        // A standby replica is ready: it is healthy and can take over.
        probe.ready.store(true, Ordering::Relaxed);
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = e.acquire() => {},
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }

    let prices = match &args.price_list {
        Some(text) if !text.trim().is_empty() => serde_yaml::from_str(text)
            .map_err(|e| format!("TENANTDB_PRICE_LIST is not a price list: {e}"))?,
        _ => Default::default(),
    };
    let build = BuildContext {
        currency: args.currency,
        prices,
        tiers,
        engine_image: args.engine_image,
        member_image: args.member_image,
        image_pull_policy: args.engine_image_pull_policy,
        operator_namespace: args.namespace,
        monitoring_peers,
        storage_class: Some(args.storage_class).filter(|s| !s.is_empty()),
        certificates: tenantdb_operator::tenant::tls::Validity {
            server: chrono::Duration::hours(i64::from(args.engine_cert_hours.max(1))),
            ..Default::default()
        },
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tenantdb-operator".into(),
            instance: Some(args.identity),
        },
    );
    let locator = EngineLocator::new(&args.engine_url)?;
    let scope = tenantdb_operator::runtime::Scope::new(&args.watch_namespace);
    let args_namespace = args.watch_namespace.clone();
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut stop = rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let pdb_ctx = Arc::new(pdb::controller::Context::new(
        client.clone(),
        locator.clone(),
        recorder.clone(),
        metrics.clone(),
    ));
    let ldp_ctx = Arc::new(lockdown::controller::Context::new(
        client.clone(),
        metrics.clone(),
    ));
    let ctx = Arc::new(Context::new(client, build, recorder, metrics).with_engines(locator));
    let (store_tx, store_rx) = tokio::sync::oneshot::channel();
    let tenants = tokio::spawn(controller::run(
        ctx,
        scope.clone(),
        store_tx,
        stopped(&stop_rx),
    ));
    let databases = tokio::spawn(pdb::controller::run(
        pdb_ctx,
        scope.clone(),
        stopped(&stop_rx),
    ));
    // LockdownProfiles are cluster-wide: only a cluster-wide operator sees every
    // database using one, so only it reports where each is applied.
    let profiles = if scope.cluster_wide() {
        tokio::spawn(lockdown::controller::run(ldp_ctx, stopped(&stop_rx)))
    } else {
        tracing::info!(namespace = %args_namespace, "namespaced: watching one namespace; LockdownProfile status is left to a cluster-wide operator");
        tokio::spawn(async {})
    };
    if let Ok(store) = store_rx.await {
        let _ = probe.tenants.set(store);
    }
    // The controller itself holds reconciles back until its caches are filled.
    probe.ready.store(true, Ordering::Relaxed);
    tracing::info!("controllers running");

    let mut stop = stop_rx.clone();
    let lost = async {
        match &elector {
            Some(e) => Some(e.hold().await),
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        lost = lost => lost,
        _ = stop.wait_for(|s| *s) => None,
    };
    if let Some(reason) = outcome {
        // Step down hard: a replica that may no longer lead must not write anything more.
        tracing::error!(%reason, "lost leadership; exiting");
        std::process::exit(1);
    }
    let _ = tokio::join!(tenants, databases, profiles);
    if let Some(e) = &elector {
        e.release().await;
    }
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C; on neither if no handler can be
/// installed, so the process then runs until killed.
async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let sigterm = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => term.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sigterm => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stop requested");
}
