//! What a replicated tenant (`spec.replicas` above 1) adds to its engine pods: the member
//! agent beside each engine, and the narrow account it runs as. Pure, like `build`.

use serde_json::json;

use super::build::{
    self, lease_name, member_account, BuildContext, BuildError, MemberAccess, CREDENTIALS_DIR,
    ENGINE_PORT, TLS_DIR,
};
use super::tls;

/// Where the agent finds its API server credentials (a projected token of its own
/// ServiceAccount: the engine container gets none).
pub const KUBE_API_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Add the member agent to an engine pod spec, and tell the engine where the tenant's
/// CA is (a standby checks its primary against it).
pub fn add_agent(pod_spec: &mut serde_json::Value, tenant: &str, ctx: &BuildContext) {
    let account = member_account(tenant);
    pod_spec["serviceAccountName"] = json!(account);
    // One process namespace for the pod: the engine is not its PID 1 (the pause process
    // is), so a debug container can signal the engine or the agent (`kill -9`, `SIGSTOP`
    // in the e2e failover runs), which the kernel refuses for a namespace's init. Both
    // processes run as the same user already.
    pod_spec["shareProcessNamespace"] = json!(true);
    if let Some(env) = pod_spec["containers"][0]["env"].as_array_mut() {
        env.push(
            json!({"name": "TENANTDB_PEER_CA", "value": format!("{TLS_DIR}/{}", tls::CA_CERT_KEY)}),
        );
    }
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let agent = json!({
        "name": "member",
        "image": ctx.member_image,
        "imagePullPolicy": ctx.image_pull_policy,
        "command": ["/usr/local/bin/tenantdb-member"],
        "env": [
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            {"name": "TENANTDB_TENANT", "value": tenant},
            {"name": "TENANTDB_ENGINE_PORT", "value": ENGINE_PORT.to_string()},
            {"name": "TENANTDB_ADMIN_TOKEN_FILE", "value": format!("{CREDENTIALS_DIR}/{}", super::admin_token::ACCEPTED_KEY)},
            {"name": "TENANTDB_CA_FILE", "value": format!("{TLS_DIR}/{}", tls::CA_CERT_KEY)}
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tls", "mountPath": TLS_DIR, "readOnly": true},
                         {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true},
                         {"name": "kube-api", "mountPath": KUBE_API_DIR, "readOnly": true}]
    });
    if let Some(containers) = pod_spec["containers"].as_array_mut() {
        containers.push(agent);
    }
    if let Some(volumes) = pod_spec["volumes"].as_array_mut() {
        volumes.push(json!({"name": "kube-api", "projected": {"defaultMode": 0o444, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
        ]}}));
    }
}

/// The agents' ServiceAccount and what it may do: read and renew the tenant's Lease (and
/// make it the first time), and read and label the tenant's member pods. Nothing else.
pub fn access(tenant: &str, meta: &serde_json::Value) -> Result<MemberAccess, BuildError> {
    let account = member_account(tenant);
    let pods: Vec<String> = (0..3)
        .map(|i| format!("{}-{i}", build::names(tenant).engine))
        .collect();
    let service_account = build::typed(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
               "automountServiceAccountToken": false}),
    )?;
    let role = build::typed(
        "Role",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [lease_name(tenant)], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "resourceNames": pods, "verbs": ["get", "patch"]}
        ]}),
    )?;
    let role_binding = build::typed(
        "RoleBinding",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
               "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": meta["namespace"]}]}),
    )?;
    Ok(MemberAccess {
        service_account,
        role,
        role_binding,
    })
}
