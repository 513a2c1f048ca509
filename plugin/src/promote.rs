//! `kubectl tenantdb promote TENANT MEMBER`: a switchover. The request is an annotation
//! on the tenant's primary Lease; the primary's agent stops acknowledging, waits until
//! the standbys have its last commits and frees the Lease for that member alone, whose
//! agent promotes its engine. This waits until the member holds the Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tenantdb_crds::Tenant;

use crate::{PluginError, Result};

/// The member's pod name: `MEMBER` as given, or `<tenant>-engine-MEMBER` for an ordinal.
pub fn member_pod(tenant: &str, member: &str) -> String {
    if member.chars().all(|c| c.is_ascii_digit()) {
        format!("{tenant}-engine-{member}")
    } else {
        member.to_string()
    }
}

/// Hand the primary role of `t` to `member`; what happened, for the terminal.
pub async fn promote(client: &Client, t: &Tenant, member: &str) -> Result<String> {
    let name = t.name_any();
    if t.spec.replicas < 2 {
        return Err(PluginError::Usage(format!(
            "tenant {name} has one member (spec.replicas: {}): there is nothing to switch over to",
            t.spec.replicas
        )));
    }
    let pod = member_pod(&name, member);
    let ordinal = pod
        .strip_prefix(&format!("{name}-engine-"))
        .and_then(|o| o.parse::<i32>().ok());
    if ordinal.is_none_or(|o| o >= t.spec.replicas) {
        return Err(PluginError::Usage(format!(
            "{pod} is not a member of {name} (its members are {name}-engine-0 to {name}-engine-{})",
            t.spec.replicas - 1
        )));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &t.namespace().unwrap_or_default());
    let lease_name = format!("{name}-engine-primary");
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let lease = leases.get(&lease_name).await?;
    if holder(&lease).as_deref() == Some(pod.as_str()) {
        return Ok(format!("{pod} is the primary already"));
    }
    let ask = json!({"metadata": {"annotations": {"tenantdb.io/handover-to": pod}}});
    leases
        .patch(&lease_name, &PatchParams::default(), &Patch::Merge(&ask))
        .await?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if holder(&leases.get(&lease_name).await?).as_deref() == Some(pod.as_str()) {
            return Ok(format!(
                "{pod} is the primary of {name} ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(PluginError::Engine(format!(
        "{pod} did not become the primary within 60 s: is it a caught-up standby? (kubectl tenantdb status {name})"
    )))
}
