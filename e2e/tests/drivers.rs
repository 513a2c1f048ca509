//! Applications on the real cluster: a pod with a PluggableDatabase's connection Secret
//! as its environment (and its CA as Node's extra CA) runs a Drizzle ORM program over
//! `@libsql/client` through the engine's Service over HTTPS; a pod of another tenant
//! holding that token is refused, and so are plain HTTP and a client trusting another CA.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenantdb_crds::PluggableDatabase;
use tenantdb_e2e::*;

/// The application image: Node.js with the pinned drivers and drivers/node/app/main.mjs.
fn node_client_image() -> String {
    std::env::var("TENANTDB_E2E_NODE_CLIENT_IMAGE")
        .unwrap_or_else(|_| "localhost/tenantdb-node-client:dev".to_string())
}

async fn ready_database(
    client: &kube::Client,
    ns: &str,
    tenant: &str,
    name: &str,
) -> anyhow::Result<String> {
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    let obj = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
                     "metadata": {"name": name}, "spec": {"tenant": tenant}});
    pdbs.patch(name, &PatchParams::apply("e2e-test"), &Patch::Apply(&obj))
        .await?;
    eventually(
        &format!("{name} open with a connection Secret"),
        Duration::from_secs(90),
        || async {
            let s = pdbs.get(name).await?.status.unwrap_or_default();
            Ok((s.phase.map(|p| p.as_str()) == Some("Open"))
                .then_some(s.connection_secret)
                .flatten())
        },
    )
    .await
}

/// Before the app starts, wait (at most 30 s, and go on either way) until the engine in
/// `LIBSQL_URL` answers this pod: a NetworkPolicy enforcer that watches pods (kube-router
/// here) admits a new pod's address a moment after it starts, and the apps under test do
/// not retry a refused first connection. The init container shares the pod's address.
fn wait_for_admission() -> String {
    let ok = tls_answers(r#""${ip:-$h}" "$p""#);
    format!(
        r#"u="${{LIBSQL_URL#*://}}"; hp="${{u%%/*}}"; h="${{hp%:*}}"; p="${{hp##*:}}"
ip="$(nslookup "$h" 2>/dev/null | awk '/^Address/ {{a=$NF}} END {{print a}}')"
for i in $(seq 60); do
  {ok} && exit 0
  sleep 0.5
done
echo "the engine at $h:$p did not answer this pod"; exit 0"#
    )
}

/// Where the app pods mount the CA they trust.
const CA_FILE: &str = "/etc/tenantdb-ca/ca.crt";

/// Run the application in `ns` with `env`, trusting the `ca.crt` of Secret `ca_secret`
/// (Node reads `NODE_EXTRA_CA_CERTS` at start); returns its log once it has ended.
async fn run_app(
    client: &kube::Client,
    ns: &str,
    name: &str,
    mut env: serde_json::Value,
    ca_secret: &str,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Some(list) = env["env"].as_array_mut() {
        list.push(json!({"name": "NODE_EXTRA_CA_CERTS", "value": CA_FILE}));
    }
    create_pod(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                        "initContainers": [{"name": "network", "image": busybox_image(),
                                            "imagePullPolicy": "IfNotPresent", "env": env["env"], "envFrom": env["envFrom"],
                                            "command": ["sh", "-c", wait_for_admission()]}],
                        "containers": [{"name": "app", "image": node_client_image(),
                                        "imagePullPolicy": "IfNotPresent", "env": env["env"], "envFrom": env["envFrom"],
                                        "volumeMounts": [{"name": "ca", "mountPath": "/etc/tenantdb-ca", "readOnly": true}]}],
                        "volumes": [{"name": "ca", "secret": {"secretName": ca_secret,
                                                              "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}),
    )
    .await?;
    wait_pod_phase(
        &pods,
        name,
        &["Succeeded", "Failed"],
        Duration::from_secs(120),
    )
    .await?;
    Ok(pods.logs(name, &Default::default()).await?)
}

#[tokio::test]
async fn a_drizzle_app_uses_its_database_through_the_secret_and_a_stranger_is_refused(
) -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-app").await?;
    let other = TestNamespace::create(&client, "e2e-other").await?;
    let admin = ready_tenant(&client, &ns.name, "shop", "bronze").await?;
    ready_tenant(&client, &other.name, "rival", "bronze").await?;
    let secret = ready_database(&client, &ns.name, "shop", "orders").await?;
    assert_eq!(secret, "orders-connection");
    ready_database(&client, &other.name, "rival", "ledger").await?;

    // The application, configured by nothing but the Secret (envFrom), through the
    // engine's Service DNS: migrate, insert, query, two transactions.
    let logs = run_app(
        &client,
        &ns.name,
        "drizzle",
        json!({"envFrom": [{"secretRef": {"name": secret}}], "env": []}),
        &secret,
    )
    .await?;
    assert_eq!(field(&logs, "result"), Some("ok"), "{logs}");
    assert_eq!(field(&logs, "migrated"), Some("ok"), "{logs}");
    assert_eq!(field(&logs, "ada_orders"), Some("2"), "{logs}");
    assert_eq!(field(&logs, "open_in_tx"), Some("1"), "{logs}");
    assert_eq!(field(&logs, "rolled_back"), Some("true"), "{logs}");
    assert_eq!(field(&logs, "total_cents"), Some("6449"), "{logs}");
    let count = || async {
        sql(
            &client,
            &ns.name,
            "shop",
            "orders",
            &admin,
            "SELECT count(*) FROM orders",
        )
        .await
    };
    let (status, rows) = count().await?;
    assert_eq!(
        (status, rows["rows"][0][0].clone()),
        (200, json!(3)),
        "the rows are in the database: {rows}"
    );

    // The Secret's token in another namespace, against another tenant's database: refused.
    let data = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get(&secret)
        .await?
        .data
        .unwrap_or_default();
    let token = String::from_utf8(data["LIBSQL_AUTH_TOKEN"].0.clone())?;
    let url = String::from_utf8(data["LIBSQL_URL"].0.clone())?;
    assert!(url.starts_with("https://"), "{url}");
    let rival = format!("https://rival-engine.{}.svc:8080/db/ledger/", other.name);
    let logs = run_app(
        &client,
        &other.name,
        "stranger",
        json!({"envFrom": [], "env": [{"name": "LIBSQL_URL", "value": rival}, {"name": "LIBSQL_AUTH_TOKEN", "value": token}]}),
        "rival-engine-tls",
    )
    .await?;
    assert_eq!(field(&logs, "result"), Some("error"), "{logs}");
    assert!(
        field(&logs, "error").is_some_and(|e| e.contains("FORBIDDEN")),
        "{logs}"
    );

    // TLS only, and only under the tenant's CA: plain HTTP to the engine gets no answer,
    // and a client that trusts another tenant's CA refuses the engine's certificate.
    let plain = url.replacen("https://", "http://", 1);
    let logs = run_app(
        &client,
        &ns.name,
        "plain",
        json!({"envFrom": [], "env": [{"name": "LIBSQL_URL", "value": plain}, {"name": "LIBSQL_AUTH_TOKEN", "value": token}]}),
        &secret,
    )
    .await?;
    assert_eq!(field(&logs, "result"), Some("error"), "plain HTTP: {logs}");
    assert_eq!(field(&logs, "migrated"), None, "plain HTTP: {logs}");
    let rival_ca = Api::<Secret>::namespaced(client.clone(), &other.name)
        .get("rival-engine-tls")
        .await?
        .data
        .unwrap_or_default()["ca.crt"]
        .clone();
    let wrong: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-ca"},
        "data": {"ca.crt": rival_ca}
    }))?;
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&Default::default(), &wrong)
        .await?;
    let logs = run_app(
        &client,
        &ns.name,
        "wrong-ca",
        json!({"envFrom": [{"secretRef": {"name": secret}}], "env": []}),
        "wrong-ca",
    )
    .await?;
    assert_eq!(field(&logs, "result"), Some("error"), "another CA: {logs}");
    assert!(
        field(&logs, "error").is_some_and(|e| e.contains("certificate")),
        "another CA: {logs}"
    );
    let (_, rows) = count().await?;
    assert_eq!(
        rows["rows"][0][0],
        json!(3),
        "nothing more was written: {rows}"
    );

    // Deleting the database revokes the token: the same app, with the same Secret values, is refused.
    Api::<PluggableDatabase>::namespaced(client.clone(), &ns.name)
        .delete("orders", &Default::default())
        .await?;
    let pdbs: Api<PluggableDatabase> = Api::namespaced(client.clone(), &ns.name);
    eventually("orders gone", Duration::from_secs(60), || async {
        Ok(pdbs.get_opt("orders").await?.is_none().then_some(()))
    })
    .await?;
    ready_database(&client, &ns.name, "shop", "orders").await?;
    let logs = run_app(
        &client,
        &ns.name,
        "revoked",
        json!({"envFrom": [], "env": [{"name": "LIBSQL_URL", "value": url}, {"name": "LIBSQL_AUTH_TOKEN", "value": token}]}),
        &secret,
    )
    .await?;
    assert!(
        field(&logs, "error").is_some_and(|e| e.contains("FORBIDDEN")),
        "the old token opens nothing: {logs}"
    );
    other.delete(Duration::from_secs(120)).await?;
    ns.delete(Duration::from_secs(120)).await?;
    Ok(())
}
