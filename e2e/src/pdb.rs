//! PluggableDatabases and LockdownProfiles as kubectl changes them: apply, wait for a
//! status, query through the tenant's engine, delete.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use tenantdb_crds::{LockdownProfile, PluggableDatabase};

use crate::*;

/// Field manager of the tests' applies, as kubectl's would be.
pub const MANAGER: &str = "e2e-test";

/// Create or change `name` of kind `K` by server-side apply, as `kubectl apply` does.
async fn apply<K>(api: Api<K>, name: &str, spec: Value) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
                     "metadata": {"name": name}, "spec": spec});
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

/// Create or change a PluggableDatabase by server-side apply.
pub async fn apply_pdb(client: &Client, ns: &str, name: &str, spec: Value) -> anyhow::Result<()> {
    apply(
        Api::<PluggableDatabase>::namespaced(client.clone(), ns),
        name,
        spec,
    )
    .await
}

/// Create or change a LockdownProfile by server-side apply.
pub async fn apply_profile(client: &Client, name: &str, spec: Value) -> anyhow::Result<()> {
    apply(Api::<LockdownProfile>::all(client.clone()), name, spec).await
}

/// Wait until the PluggableDatabase's status satisfies `ok`; returns it.
pub async fn wait_pdb(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&PluggableDatabase) -> bool,
) -> anyhow::Result<PluggableDatabase> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    let ok = &ok;
    let api = &api;
    eventually(&format!("{name}: {what}"), timeout, || async move {
        let p = api.get(name).await?;
        Ok(ok(&p).then_some(p))
    })
    .await
}

/// The phase status reports, or "".
pub fn phase(p: &PluggableDatabase) -> &'static str {
    p.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("", |p| p.as_str())
}

/// The reason of the Ready condition, or "".
pub fn ready_reason(p: &PluggableDatabase) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// Status says the database is in `mode` (or `Mounted`) for its current generation.
pub fn open_in(mode: &'static str) -> impl Fn(&PluggableDatabase) -> bool {
    move |p| {
        phase(p) == if mode == "Mounted" { "Mounted" } else { "Open" }
            && p.status
                .as_ref()
                .and_then(|s| s.open_mode)
                .is_some_and(|m| format!("{m:?}") == mode)
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    }
}

/// Run `q` with `token`; its rows, failing on anything but 200.
pub async fn rows(
    client: &Client,
    ns: &str,
    tenant: &str,
    pdb: &str,
    token: &str,
    q: &str,
) -> anyhow::Result<Vec<Value>> {
    let (s, v) = sql(client, ns, tenant, pdb, token, q).await?;
    anyhow::ensure!(s == 200, "{q}: {s} {v}");
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

/// Delete a PluggableDatabase and wait until it is gone (finalizer done).
pub async fn delete_pdb(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<PluggableDatabase> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default()).await?;
    eventually(&format!("{name} gone"), Duration::from_secs(60), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Overwrite 4 KiB in the middle of a file on the tenant's volume, from a pod that
/// mounts the same claim (local volumes allow a second pod on the node).
pub async fn corrupt_on_volume(
    client: &Client,
    ns: &str,
    tenant: &str,
    path: &str,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let spec = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "corrupter"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", format!("dd if=/dev/urandom of=/data/{path} bs=4096 seek=2 count=1 conv=notrunc && echo corrupted")],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{tenant}-engine-0")}}]
        }
    });
    create_pod(&pods, spec).await?;
    let pod = wait_pod_phase(
        &pods,
        "corrupter",
        &["Succeeded", "Failed"],
        Duration::from_secs(60),
    )
    .await?;
    anyhow::ensure!(
        pod.status.and_then(|s| s.phase).as_deref() == Some("Succeeded"),
        "the corrupting pod failed"
    );
    Ok(())
}

/// Apply PluggableDatabase `name` with `spec` and wait (60 s) until it is open ReadWrite.
pub async fn open_database(
    client: &Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<PluggableDatabase> {
    apply_pdb(client, ns, name, spec).await?;
    wait_pdb(
        client,
        ns,
        name,
        "open",
        Duration::from_secs(60),
        open_in("ReadWrite"),
    )
    .await
}
