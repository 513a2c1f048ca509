//! `tenantdb-member`: the agent beside each engine of a replicated tenant
//! (`docs/ha.md`). Configured from its pod's environment.

use clap::Parser;
use tenantdb_operator::member::agent::{run, Agent, Config};

#[derive(Parser, Debug)]
#[command(
    name = "tenantdb-member",
    version,
    about = "TenantDB's member agent: Lease election and role of one engine"
)]
struct Args {
    /// This pod.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// The tenant's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The tenant.
    #[arg(long, env = "TENANTDB_TENANT")]
    tenant: String,
    /// The engine's port.
    #[arg(long, env = "TENANTDB_ENGINE_PORT", default_value_t = 8080)]
    port: u16,
    /// The engine's admin tokens (the operator's credentials Secret, mounted).
    #[arg(long, env = "TENANTDB_ADMIN_TOKEN_FILE")]
    token_file: std::path::PathBuf,
    /// The tenant's CA.
    #[arg(long, env = "TENANTDB_CA_FILE")]
    ca_file: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let a = Args::parse();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no API server");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cfg = Config {
        pod: a.pod,
        namespace: a.namespace,
        tenant: a.tenant,
        port: a.port,
        token_file: a.token_file,
        ca_file: a.ca_file,
    };
    match Agent::new(cfg, client) {
        Ok(agent) => {
            run(agent).await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "member agent cannot start");
            std::process::ExitCode::FAILURE
        }
    }
}
