//! Users' access: the chart's roles aggregate into Kubernetes' `view`, `edit` and `admin`,
//! so a namespace's viewers read its Tenants and databases and its editors change them,
//! while LockdownProfiles (cluster-wide policy) stay with cluster admins.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use tenantdb_e2e::*;

/// Whether `user` may `verb` the `resource` in namespace `ns` ("" for cluster scope), as
/// the API server's authorizer answers a SubjectAccessReview.
async fn may(
    client: &Client,
    user: &str,
    ns: &str,
    verb: &str,
    resource: &str,
) -> anyhow::Result<bool> {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:authenticated"],
                 "resourceAttributes": {"group": "tenantdb.io", "resource": resource, "verb": verb, "namespace": ns}}
    }))?;
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn rbac_api(client: &Client, kind: &str, ns: Option<&str>) -> Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Bind `user` to the ClusterRole `role`: in `ns`, or cluster-wide when `ns` is `None`.
async fn bind(client: &Client, user: &str, role: &str, ns: Option<&str>) -> anyhow::Result<()> {
    let kind = if ns.is_some() {
        "RoleBinding"
    } else {
        "ClusterRoleBinding"
    };
    let binding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": format!("e2e-rbac-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))?;
    rbac_api(client, kind, ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test]
async fn viewers_read_editors_change_and_lockdown_profiles_stay_with_cluster_admins(
) -> anyhow::Result<()> {
    let client = client().await?;
    let c = &client;
    let ns = TestNamespace::create(c, "e2e-rbac").await?;
    let n = ns.name.as_str();
    let clara = format!("clara-{n}");
    bind(c, "vera", "view", Some(n)).await?;
    bind(c, "ed", "edit", Some(n)).await?;
    bind(c, &clara, "edit", None).await?;
    // Aggregation is the controller-manager's work: wait until it has happened.
    eventually(
        "view aggregates tenantdb-view",
        Duration::from_secs(60),
        || async { Ok(may(c, "vera", n, "list", "tenants").await?.then_some(())) },
    )
    .await?;
    eventually(
        "edit aggregates tenantdb-edit",
        Duration::from_secs(60),
        || async {
            Ok(may(c, "ed", n, "create", "pluggabledatabases")
                .await?
                .then_some(()))
        },
    )
    .await?;
    for resource in ["tenants", "pluggabledatabases"] {
        assert!(
            may(c, "vera", n, "get", resource).await?,
            "view reads {resource}"
        );
        assert!(
            !may(c, "vera", n, "create", resource).await?,
            "view changes no {resource}"
        );
        assert!(
            may(c, "ed", n, "delete", resource).await?,
            "edit changes {resource}"
        );
        assert!(
            !may(c, "ed", "default", "create", resource).await?,
            "only in its namespace"
        );
    }
    assert!(
        may(c, &clara, "", "list", "lockdownprofiles").await?,
        "edit reads profiles"
    );
    assert!(
        !may(c, &clara, "", "patch", "lockdownprofiles").await?,
        "cluster-wide edit still does not change lockdown policy"
    );
    rbac_api(c, "ClusterRoleBinding", None)
        .delete(&format!("e2e-rbac-{clara}"), &Default::default())
        .await?;
    ns.delete(Duration::from_secs(60)).await
}
