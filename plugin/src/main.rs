//! `kubectl tenantdb`: operate TenantDB tenants the way `kubectl cnpg` operates
//! clusters. Talks to the API server with your kubeconfig, and to a tenant's engine over
//! TLS through a port-forward, verified against the tenant's CA, with the tenant's admin
//! token (read from its credentials Secret, so your RBAC decides who may use it).

mod connect;
mod engine;
mod promote;
mod render;
mod tunnel;

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tenantdb_crds::{PluggableDatabase, Tenant};
use tenantdb_engine_api::backup::ShipStatus;
use tenantdb_engine_api::names;

/// Why a command failed; printed as `error: …` with exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No kubeconfig or cluster.
    #[error("cannot reach the cluster: {0}")]
    Cluster(String),
    /// The tenant does not exist.
    #[error("tenant {name} not found in namespace {namespace} (kubectl get tnt -n {namespace})")]
    TenantNotFound {
        /// Tenant name.
        name: String,
        /// Namespace searched.
        namespace: String,
    },
    /// The tenant exists but its engine does not serve.
    #[error("tenant {0} has no running engine (phase {1}); kubectl tenantdb resume {0} if it is suspended")]
    NotServing(String, String),
    /// The engine answered with an error.
    #[error("{0}")]
    Engine(String),
    /// A call to the API server failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, PluginError>;

#[derive(Parser)]
#[command(
    name = "kubectl tenantdb",
    version,
    about = "Operate TenantDB tenants and their databases"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tier, phase, limits against use, databases and SLA; every tenant when none is named.
    Status {
        /// Tenant name.
        tenant: Option<String>,
    },
    /// Metered usage per database this period (or --period).
    Usage {
        /// Tenant name.
        tenant: String,
        /// Billing period, YYYY-MM.
        #[arg(long)]
        period: Option<String>,
    },
    /// The bill of a period: tier base price plus usage.
    Billing {
        /// Tenant name.
        tenant: String,
        /// Billing period, YYYY-MM.
        #[arg(long)]
        period: Option<String>,
    },
    /// Run one SQL statement in a database and print the result.
    Sql {
        /// Tenant name.
        tenant: String,
        /// Database (PluggableDatabase) name.
        database: String,
        /// The statement.
        sql: String,
    },
    /// Switch over: make MEMBER (a pod name, or its ordinal) the tenant's primary once
    /// it has every commit of the current one.
    Promote {
        /// Tenant name.
        tenant: String,
        /// The member: `<tenant>-engine-N` or `N`.
        member: String,
    },
    /// Hibernate a tenant: scale its engine to zero, keep its volume.
    Suspend {
        /// Tenant name.
        tenant: String,
    },
    /// Bring a suspended tenant back on the same volume.
    Resume {
        /// Tenant name.
        tenant: String,
    },
    /// A database's connection details as environment lines (LIBSQL_URL,
    /// LIBSQL_AUTH_TOKEN, …), from its connection Secret: `eval "$(kubectl tenantdb
    /// connect T DB)"` in a pod, or with --port-forward a local URL to use from here.
    Connect {
        /// Tenant name.
        tenant: String,
        /// Database (PluggableDatabase) name.
        database: String,
        /// Forward a local port to the tenant's engine and print a local URL; runs until
        /// interrupted.
        #[arg(long)]
        port_forward: bool,
        /// The local port for --port-forward (default: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// What the backup store holds for a tenant: every database (live, dropped, or
    /// moved away) with its recoverable window and, for live ones, how far shipping is
    /// behind; with a database, its generations too.
    Backups {
        /// Tenant name (as it is, or as it was in the store: `--from` for a gone tenant).
        tenant: String,
        /// Database name.
        database: Option<String>,
        /// The tenant name in the store, when it is not this tenant's (a tenant that is
        /// gone); the engine of `tenant` reads it.
        #[arg(long)]
        from: Option<String>,
    },
    /// The engine's log.
    Logs {
        /// Tenant name.
        tenant: String,
        /// Lines from the end.
        #[arg(long, default_value_t = 100)]
        tail: i64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // ring, explicitly: the tree compiles in two rustls providers (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn suspend(tenants: &Api<Tenant>, t: Tenant, suspend: bool) -> Result<String> {
    let name = kube::ResourceExt::name_any(&t);
    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspended": suspend}})),
        )
        .await?;
    Ok(format!(
        "tenant {name} {}\n",
        if suspend {
            "suspending: its engine scales to zero, the volume stays"
        } else {
            "resuming on the same volume"
        }
    ))
}

/// `kubectl tenantdb backups`: the store's listing through the tenant's engine, beside
/// each live database's shipping status.
async fn backups(
    client: &Client,
    t: &Tenant,
    database: Option<&str>,
    from: Option<&str>,
) -> Result<String> {
    let name = kube::ResourceExt::name_any(t);
    if t.spec.backup.is_none() {
        return Err(PluginError::Usage(format!(
            "tenant {name} has no spec.backup: its engine has no store to list"
        )));
    }
    let in_store = from.unwrap_or(&name);
    for (kind, n) in [("tenant", Some(in_store)), ("database", database)] {
        if let Some(n) = n {
            names::validate(kind, n).map_err(|e| PluginError::Usage(e.to_string()))?;
        }
    }
    let live = |db: String| async move {
        if from.is_some() {
            return None;
        }
        let status = engine::get(client, t, &format!("/v1/databases/{db}/backup")).await;
        status
            .ok()
            .and_then(|v| serde_json::from_value::<ShipStatus>(v).ok())
    };
    match database {
        Some(db) => {
            let v = engine::get(client, t, &format!("/v1/backups/{in_store}/{db}")).await?;
            let status = live(db.to_string()).await;
            Ok(render::backup_generations(&v, status.as_ref()))
        }
        None => {
            let v = engine::get(client, t, &format!("/v1/backups/{in_store}")).await?;
            let mut statuses = Vec::new();
            for d in v["databases"].as_array().into_iter().flatten() {
                let db = d["database"].as_str().unwrap_or_default().to_string();
                statuses.push(live(db).await);
            }
            Ok(render::backups(&v, &statuses))
        }
    }
}

async fn run(cli: Cli) -> Result<String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| PluginError::Cluster(e.to_string()))?;
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| PluginError::Cluster(e.to_string()))?;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let tenant = |name: String| {
        let (tenants, ns) = (tenants.clone(), ns.clone());
        async move {
            tenants
                .get_opt(&name)
                .await?
                .ok_or(PluginError::TenantNotFound {
                    name,
                    namespace: ns,
                })
        }
    };
    match cli.command {
        Command::Status { tenant: Some(name) } => {
            let t = tenant(name).await?;
            let pdbs = Api::<PluggableDatabase>::namespaced(client, &ns)
                .list(&Default::default())
                .await?;
            Ok(render::status(&t, &pdbs.items))
        }
        Command::Status { tenant: None } => {
            let all = tenants.list(&Default::default()).await?;
            Ok(render::tenants(&all.items))
        }
        Command::Usage {
            tenant: name,
            period,
        } => {
            let t = tenant(name).await?;
            let path = engine::with_period("/v1/usage", period.as_deref())?;
            let v = engine::get(&client, &t, &path).await?;
            Ok(render::usage(&v))
        }
        Command::Billing {
            tenant: name,
            period,
        } => {
            let t = tenant(name).await?;
            let path = engine::with_period("/v1/billing", period.as_deref())?;
            let v = engine::get(&client, &t, &path).await?;
            Ok(render::bill(&v))
        }
        Command::Sql {
            tenant: name,
            database,
            sql,
        } => {
            let t = tenant(name).await?;
            let v = engine::query(&client, &t, &database, &sql).await?;
            Ok(render::rows(&v))
        }
        Command::Connect {
            tenant: name,
            database,
            port_forward,
            port,
        } => {
            let t = tenant(name).await?;
            let details = connect::details(&client, &ns, &t, &database).await?;
            if port_forward {
                connect::forward(&client, &ns, &t, &database, &details, port).await
            } else {
                Ok(details.env_lines(None))
            }
        }
        Command::Backups {
            tenant: name,
            database,
            from,
        } => {
            let t = tenant(name).await?;
            backups(&client, &t, database.as_deref(), from.as_deref()).await
        }
        Command::Promote {
            tenant: name,
            member,
        } => promote::promote(&client, &tenant(name).await?, &member).await,
        Command::Suspend { tenant: name } => suspend(&tenants, tenant(name).await?, true).await,
        Command::Resume { tenant: name } => suspend(&tenants, tenant(name).await?, false).await,
        Command::Logs { tenant: name, tail } => {
            let t = tenant(name).await?;
            let pod = format!("{}-engine-0", kube::ResourceExt::name_any(&t));
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            if pods.get_opt(&pod).await?.is_none() {
                let phase = render::phase(&t);
                return Err(PluginError::NotServing(
                    kube::ResourceExt::name_any(&t),
                    phase,
                ));
            }
            let logs = pods
                .logs(
                    &pod,
                    &LogParams {
                        tail_lines: Some(tail.max(1)),
                        ..Default::default()
                    },
                )
                .await?;
            Ok(logs)
        }
    }
}
