//! `kubectl tenantdb connect`: a database's connection details from its connection
//! Secret, printed as environment lines; with `--port-forward`, a local port forwarded
//! to the tenant's engine pod (through the API server, as `kubectl port-forward`), and a
//! local URL the libSQL drivers take as it is. The forward ends TLS here, verifying the
//! engine against the tenant's CA; the plain leg is this machine's loopback alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tenantdb_crds::{PluggableDatabase, Tenant};

use crate::{PluginError, Result};

use crate::tunnel::{Tunnel, ENGINE_PORT};

/// What the Secret holds, by key.
pub struct Details(BTreeMap<String, String>);

impl Details {
    /// `KEY=value` lines; with `local` (a loopback base URL) the URLs point there.
    pub fn env_lines(&self, local: Option<&str>) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            let v = match (k.as_str(), local) {
                ("LIBSQL_URL", Some(base)) => format!("{base}/db/{}/", self.database()),
                ("LIBSQL_WS_URL", Some(base)) => {
                    format!("{}/db/{}/", base.replacen("http", "ws", 1), self.database())
                }
                _ => v.clone(),
            };
            if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
        out
    }

    fn database(&self) -> &str {
        self.0
            .get("database")
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// The connection details of `database` in `tenant`.
pub async fn details(
    client: &Client,
    ns: &str,
    tenant: &Tenant,
    database: &str,
) -> Result<Details> {
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    let pdb = pdbs.get_opt(database).await?.ok_or_else(|| {
        PluginError::Usage(format!(
            "no PluggableDatabase {database} in namespace {ns} (kubectl get pldb -n {ns})"
        ))
    })?;
    let tname = tenant.name_any();
    if pdb.spec.tenant != tname {
        return Err(PluginError::Usage(format!(
            "database {database} belongs to tenant {}, not {tname}",
            pdb.spec.tenant
        )));
    }
    let secret = pdb.status.and_then(|s| s.connection_secret).ok_or_else(|| {
        PluginError::Usage(format!(
            "database {database} has no connection Secret yet (it is not Ready: kubectl describe pldb {database} -n {ns})"
        ))
    })?;
    let data = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&secret)
        .await?
        .data
        .unwrap_or_default();
    Ok(Details(
        data.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    ))
}

/// Forward `port` (0: any free one) on loopback to the tenant's engine pod, print the
/// details with local URLs, and serve connections until interrupted.
pub async fn forward(
    client: &Client,
    ns: &str,
    tenant: &Tenant,
    database: &str,
    details: &Details,
    port: u16,
) -> Result<String> {
    let tunnel = Tunnel::to(client, tenant).await?;
    let pod = tunnel.pod.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| PluginError::Usage(format!("listening on 127.0.0.1:{port}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| PluginError::Usage(e.to_string()))?;
    print!("{}", details.env_lines(Some(&format!("http://{local}"))));
    eprintln!(
        "forwarding {local} to {ns}/{pod}:{ENGINE_PORT} over TLS, verified against the tenant's CA, for database {database}; Ctrl-C to stop"
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        let (mut conn, _) = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| PluginError::Usage(e.to_string()))?,
            _ = tokio::signal::ctrl_c() => return Ok(String::new()),
        };
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            match tunnel.open().await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream.stream).await;
                }
                Err(e) => eprintln!("{e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> Details {
        Details(
            [
                ("LIBSQL_URL", "http://acme-engine.shop.svc:8080/db/orders/"),
                ("LIBSQL_WS_URL", "ws://acme-engine.shop.svc:8080/db/orders/"),
                ("LIBSQL_AUTH_TOKEN", "tdb_x"),
                ("database", "orders"),
                ("tenant", "acme"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }

    #[test]
    fn env_lines_carry_the_secret_or_the_forwarded_urls() {
        let d = details();
        assert_eq!(
            d.env_lines(None),
            "LIBSQL_AUTH_TOKEN=tdb_x\nLIBSQL_URL=http://acme-engine.shop.svc:8080/db/orders/\nLIBSQL_WS_URL=ws://acme-engine.shop.svc:8080/db/orders/\n"
        );
        let local = d.env_lines(Some("http://127.0.0.1:4123"));
        assert!(
            local.contains("LIBSQL_URL=http://127.0.0.1:4123/db/orders/\n"),
            "{local}"
        );
        assert!(
            local.contains("LIBSQL_WS_URL=ws://127.0.0.1:4123/db/orders/\n"),
            "{local}"
        );
    }
}
