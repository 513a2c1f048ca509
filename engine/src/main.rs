//! `tenantdb-engine serve --data-dir DIR --listen ADDR [--admin-token T] [--config FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tenantdb_engine::server::{serve, shutdown_signal, ServeOptions};

#[derive(Parser)]
#[command(
    name = "tenantdb-engine",
    version,
    about = "TenantDB's per-tenant database engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the `Serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Directory holding the catalog, the seed and the databases.
        #[arg(long, env = "TENANTDB_DATA_DIR", default_value = "/data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "TENANTDB_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Token the admin plane requires (the operator's).
        #[arg(
            long,
            env = "TENANTDB_ADMIN_TOKEN",
            hide_env_values = true,
            conflicts_with = "admin_token_file"
        )]
        admin_token: Option<String>,
        /// A file of admin tokens, one per line, read again when it changes: the
        /// operator's mounted credentials Secret, so the token rotates without a restart.
        #[arg(long, env = "TENANTDB_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// PEM certificate chain to serve HTTPS with (re-read when it changes). Without
        /// it the engine serves plain HTTP, and only on a loopback address.
        #[arg(long, env = "TENANTDB_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of `--tls-cert`.
        #[arg(long, env = "TENANTDB_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The tenant's CA (PEM) a standby checks its primary's certificate against.
        #[arg(long, env = "TENANTDB_PEER_CA")]
        peer_ca: Option<PathBuf>,
        /// Engine configuration (YAML) written by the operator.
        #[arg(long, env = "TENANTDB_CONFIG")]
        config: Option<PathBuf>,
        /// Standalone as root: run in `<NAME>/<tenant>` under the cgroup root, with the
        /// tier's CPU, memory and IO limits written there.
        #[arg(long, env = "TENANTDB_CGROUP_PARENT", value_name = "NAME")]
        cgroup_parent: Option<String>,
    },
    /// Print the OpenAPI document (what `/openapi.json` serves); `docs/engine-openapi.json`
    /// is this output.
    Openapi,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // ring, explicitly: the tree compiles in two rustls providers (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let opts = match Cli::parse().command {
        Command::Openapi => {
            let doc = tenantdb_engine::openapi::document();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            return std::process::ExitCode::SUCCESS;
        }
        Command::Serve {
            data_dir,
            listen,
            admin_token,
            admin_token_file,
            config,
            cgroup_parent,
            tls_cert,
            tls_key,
            peer_ca,
        } => ServeOptions {
            peer_ca,
            data_dir,
            listen,
            admin_token,
            admin_token_file,
            config,
            cgroup_parent,
            tls: tls_cert
                .zip(tls_key)
                .map(|(cert, key)| tenantdb_engine::tls::TlsFiles { cert, key }),
        },
    };
    match serve(opts, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "engine stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
