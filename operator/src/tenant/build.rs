//! Pure functions from a Tenant to the objects that serve it. No client here: these
//! are tested from YAML fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tenantdb_crds::{BackupSpec, DeletionPolicy, Durability, EffectiveLimits, Priority, Tenant};
use tenantdb_engine_api::backup::{BackupConfig, StoreConfig};
use tenantdb_engine_api::config::{
    BillingConfig, EngineConfig, EngineLimits, PriceList, Priority as EnginePriority, SlaTargets,
};
use tenantdb_engine_api::replication::{Durability as EngineDurability, ReplicationConfig};

use super::tls;
use crate::quantity;
use crate::tiers::{effective_limits, TierError, TierSpec, TierTable};

/// Port of the engine's HTTP API.
pub const ENGINE_PORT: u16 = 8080;
/// Key of the admin token in the credentials Secret.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// Where the engine pod mounts the accepted admin tokens of its credentials Secret.
pub const CREDENTIALS_DIR: &str = "/etc/tenantdb-credentials";
/// Where the engine pod mounts its TLS Secret.
pub const TLS_DIR: &str = "/etc/tenantdb-tls";
/// Key of the engine configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "engine.yaml";
/// Label holding the tenant's name on every child.
pub const TENANT_LABEL: &str = "tenantdb.io/tenant";
/// Label a member agent puts on its pod: `primary` or `standby` (`docs/ha.md`).
pub const ROLE_LABEL: &str = "tenantdb.io/role";

/// What the builders need besides the Tenant.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The tier table in force.
    pub tiers: TierTable,
    /// Image of `tenantdb-engine`.
    pub engine_image: String,
    /// Pull policy for the engine image.
    pub image_pull_policy: String,
    /// Namespace the operator runs in (admitted by the NetworkPolicy).
    pub operator_namespace: String,
    /// Who else may reach engines' port (Prometheus): NetworkPolicy peers, as the chart's
    /// `networkPolicy.monitoringPeers` gives them.
    pub monitoring_peers: Vec<serde_json::Value>,
    /// StorageClass for data volumes; the cluster default when `None`.
    pub storage_class: Option<String>,
    /// Currency of bills.
    pub currency: String,
    /// Prices of metered usage.
    pub prices: PriceList,
    /// Lifetimes of tenant CAs and engine certificates.
    pub certificates: tls::Validity,
    /// Image holding `tenantdb-member`, the agent beside each engine of a replicated
    /// tenant (the operator's own image).
    pub member_image: String,
}

/// Why no objects can be built for a Tenant.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Tenant has no UID yet (it was not read from the API server).
    #[error("the Tenant has no metadata.uid")]
    NoUid,
    /// A limit is invalid.
    #[error(transparent)]
    Limits(#[from] TierError),
    /// A certificate could not be issued.
    #[error("TLS: {0}")]
    Tls(String),
    /// `spec.backup` cannot be turned into the engine's settings.
    #[error("spec.backup: {0}")]
    Backup(String),
    /// A built object does not fit its Kubernetes type (a bug).
    #[error("building {kind}: {source}")]
    Shape {
        /// Object kind.
        kind: &'static str,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// A built object names a field its Kubernetes type does not have, which serde would
    /// drop without a word (a misspelt key inside `securityContext`, say): a bug.
    #[error("building {kind}: {field} is not a field of its type and would be dropped")]
    Dropped {
        /// Object kind.
        kind: &'static str,
        /// Path of the field, such as `.spec.template.spec.securityContext.runAsUsr`.
        field: String,
    },
}

/// Every object a Tenant wants, in apply order (configuration before the StatefulSet).
#[derive(Debug, Clone)]
pub struct Desired {
    /// The limits in force.
    pub limits: EffectiveLimits,
    /// Engine configuration.
    pub config_map: ConfigMap,
    /// Stable network identity for the StatefulSet.
    pub headless_service: Service,
    /// Client endpoint.
    pub service: Service,
    /// The engine.
    pub stateful_set: StatefulSet,
    /// Keeps the engine up through voluntary disruptions.
    pub disruption_budget: PodDisruptionBudget,
    /// Admits only the tenant's namespace and the operator.
    pub network_policy: NetworkPolicy,
    /// The primary (`<tenant>-engine-rw`): what the operator, the plugin and
    /// connection Secrets use.
    pub rw_service: Service,
    /// The standbys (`<tenant>-engine-ro`).
    pub ro_service: Service,
    /// With standbys: the member agents' account and what it may do.
    pub member_access: Option<MemberAccess>,
}

/// The member agents' ServiceAccount, Role (the tenant's Lease and the members' pods)
/// and RoleBinding.
#[derive(Debug, Clone)]
pub struct MemberAccess {
    /// ServiceAccount.
    pub service_account: k8s_openapi::api::core::v1::ServiceAccount,
    /// Role.
    pub role: k8s_openapi::api::rbac::v1::Role,
    /// RoleBinding.
    pub role_binding: k8s_openapi::api::rbac::v1::RoleBinding,
}

/// Name of a tenant's primary Lease.
pub fn lease_name(tenant: &str) -> String {
    format!("{tenant}-engine-primary")
}

/// Name of the member agents' ServiceAccount, Role and RoleBinding.
pub fn member_account(tenant: &str) -> String {
    format!("{tenant}-engine-member")
}

/// Engine members a Tenant asks for (1 to 3).
pub fn replicas(tenant: &Tenant) -> i32 {
    tenant.spec.replicas.clamp(1, 3)
}

/// Names of a tenant's children.
pub struct Names {
    /// StatefulSet and client Service.
    pub engine: String,
    /// Headless Service.
    pub headless: String,
    /// ConfigMap.
    pub config: String,
    /// Credentials Secret.
    pub credentials: String,
    /// The tenant's certificate authority (certificate and key; the operator's alone).
    pub ca: String,
    /// The engine's server certificate, its key and the CA's certificate (mounted).
    pub tls: String,
}

/// Names of a tenant's children.
pub fn names(tenant: &str) -> Names {
    Names {
        engine: format!("{tenant}-engine"),
        headless: format!("{tenant}-engine-headless"),
        config: format!("{tenant}-engine-config"),
        credentials: format!("{tenant}-engine-credentials"),
        ca: format!("{tenant}-engine-ca"),
        tls: format!("{tenant}-engine-tls"),
    }
}

/// In-cluster URL of a tenant's primary engine (HTTPS, under the tenant's own CA): the
/// `-rw` Service, which follows the primary.
pub fn endpoint(tenant: &str, namespace: &str) -> String {
    format!(
        "https://{}-rw.{namespace}.svc:{ENGINE_PORT}",
        names(tenant).engine
    )
}

/// Labels selecting a tenant's engine pods.
pub fn selector_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "tenantdb-engine".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), tenant.to_string()),
        (TENANT_LABEL.to_string(), tenant.to_string()),
    ])
}

fn labels(tenant: &Tenant) -> BTreeMap<String, String> {
    let mut l = selector_labels(&tenant.name_any());
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "tenantdb-operator".into(),
    );
    l.insert("app.kubernetes.io/component".into(), "engine".into());
    l.insert("tenantdb.io/tier".into(), tenant.spec.tier.as_str().into());
    l
}

fn owner(tenant: &Tenant) -> Result<OwnerReference, BuildError> {
    tenant
        .controller_owner_ref(&())
        .filter(|o| !o.uid.is_empty())
        .ok_or(BuildError::NoUid)
}

/// Who may reach a tenant's engine and what it may reach. In: pods of the tenant's own
/// namespace, the operator, and the monitoring peers the chart names. Out: DNS, and the
/// backup store's port when backup is on (by name the store may be anywhere, so any
/// address but the link-local range, where cloud metadata services answer). Nothing else:
/// the engine never calls the API server or any other service.
pub fn network_policy(
    tenant: &Tenant,
    ctx: &BuildContext,
    meta: serde_json::Value,
    selector: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut from = vec![
        json!({"podSelector": {}}),
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.operator_namespace}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tenantdb-operator"}}}),
    ];
    from.extend(ctx.monitoring_peers.iter().cloned());
    let mut egress =
        vec![json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})];
    if replicas(tenant) > 1 {
        // Standbys stream from the primary; member agents reach the API server (its
        // endpoints' port, which policies see after the Service's translation).
        egress.push(json!({"to": [{"podSelector": {"matchLabels": selector}}],
                           "ports": [{"port": ENGINE_PORT, "protocol": "TCP"}]}));
        egress.push(
            json!({"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}),
        );
    }
    if let Some(port) = tenant
        .spec
        .backup
        .as_ref()
        .and_then(|b| store_port(&b.store.endpoint))
    {
        egress.push(json!({
            "to": [{"namespaceSelector": {}},
                   {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}],
            "ports": [{"port": port, "protocol": "TCP"}]
        }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": from, "ports": [{"port": ENGINE_PORT, "protocol": "TCP"}]}],
            "egress": egress
        }
    })
}

/// Parse the chart's `networkPolicy.monitoringPeers` (a JSON array of NetworkPolicy peers),
/// refusing anything the Kubernetes type would not keep whole.
pub fn monitoring_peers(text: &str) -> Result<Vec<serde_json::Value>, String> {
    use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
    let peers: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("monitoring peers: not a JSON array of NetworkPolicy peers: {e}"))?;
    for (i, p) in peers.iter().enumerate() {
        typed::<NetworkPolicyPeer>("NetworkPolicy peer", p.clone())
            .map_err(|e| format!("monitoring peer {i}: {e}"))?;
    }
    Ok(peers)
}

/// The TCP port of an object store's endpoint URL (its scheme's default when unnamed).
pub fn store_port(endpoint: &str) -> Option<u16> {
    reqwest::Url::parse(endpoint).ok()?.port_or_known_default()
}

/// `value` as the Kubernetes type `T`, refused when the type would drop any field of it.
pub fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    kind: &'static str,
    value: serde_json::Value,
) -> Result<T, BuildError> {
    let shape = |source| BuildError::Shape { kind, source };
    let obj: T = serde_json::from_value(value.clone()).map_err(shape)?;
    let back = serde_json::to_value(&obj).map_err(shape)?;
    match dropped(&value, &back, "") {
        Some(field) => Err(BuildError::Dropped { kind, field }),
        None => Ok(obj),
    }
}

/// The first field `wanted` has and `got` lacks, as a path (`.spec.ports[0].nme`); a null
/// counts as absent on both sides.
pub fn dropped(wanted: &serde_json::Value, got: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (wanted, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match g.get(k) {
                _ if v.is_null() => None,
                None | Some(Value::Null) => Some(here),
                Some(gv) => dropped(v, gv, &here),
            }
        }),
        (Value::Array(w), Value::Array(g)) => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (v, gv))| dropped(v, gv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn engine_priority(p: Priority) -> EnginePriority {
    match p {
        Priority::Critical => EnginePriority::Critical,
        Priority::High => EnginePriority::High,
        Priority::Medium => EnginePriority::Medium,
        Priority::Low => EnginePriority::Low,
        Priority::BestEffort => EnginePriority::BestEffort,
    }
}

/// The CPU an engine pod requests for a tenant of priority `p` whose limit is
/// `cpu_millis`: the whole limit down to medium (Guaranteed QoS), half for low, a quarter
/// for bestEffort. The kubelet sets a pod's CPU weight from its request, so when the node
/// is busy the kernel gives low-priority tenants proportionally less CPU; their limit,
/// and what the engine sizes itself from, stay the tier's.
pub fn cpu_request_millis(p: Priority, cpu_millis: u64) -> u64 {
    let share = match p {
        Priority::Critical | Priority::High | Priority::Medium => return cpu_millis,
        Priority::Low => 2,
        Priority::BestEffort => 4,
    };
    cpu_millis.div_ceil(share).max(1)
}

/// The engine configuration for a tenant with these limits.
pub fn engine_config(
    tenant: &Tenant,
    limits: &EffectiveLimits,
    tier: &TierSpec,
    ctx: &BuildContext,
) -> Result<EngineConfig, BuildError> {
    let invalid = |field: &str| {
        let field = field.to_string();
        move |source| TierError::Quantity { field, source }
    };
    let storage_bytes = quantity::bytes(&limits.storage).map_err(invalid("storage"))?;
    let memory_bytes = quantity::bytes(&limits.memory).map_err(invalid("memory"))?;
    let cpu_millis =
        (quantity::parse(&limits.cpu).map_err(invalid("cpu"))? * 1000.0).round() as u64;
    Ok(EngineConfig {
        tenant: Some(tenant.name_any()),
        namespace: tenant.namespace(),
        tier: Some(tenant.spec.tier.as_str().into()),
        priority: Some(engine_priority(tenant.spec.priority)),
        limits: EngineLimits {
            cpu_millis: Some(cpu_millis),
            memory_bytes: Some(memory_bytes),
            io_bytes_per_second: None,
            iops: Some(limits.iops),
            bandwidth_mbps: Some(limits.bandwidth_mbps),
            connections: Some(limits.connections),
            requests_per_hour: Some(limits.requests_per_hour),
            burst: Some(limits.burst),
            storage_bytes: Some(storage_bytes),
            max_databases: Some(limits.max_databases),
        },
        seed_sql: None,
        stream_idle_timeout_millis: None,
        backup: tenant.spec.backup.as_ref().map(backup_config).transpose()?,
        replication: (tenant.spec.replicas > 1).then_some(ReplicationConfig {
            durability: match tenant.spec.durability {
                Durability::Async => EngineDurability::Async,
                Durability::Required => EngineDurability::Required,
                Durability::Preferred => EngineDurability::Preferred,
            },
            ack_timeout_millis: None,
        }),
        sla: Some(SlaTargets {
            uptime_percent: tier.sla_uptime_percent,
            max_avg_latency_ms: f64::from(tier.max_avg_latency_ms),
            max_error_rate: 0.01,
        }),
        billing: Some(BillingConfig {
            currency: ctx.currency.clone(),
            base_price_per_month: tier.price_per_month,
            prices: ctx.prices.clone(),
        }),
    })
}

/// The engine's backup settings for `spec.backup` (credentials reach the pod as
/// environment variables from the Secret, never through the ConfigMap).
pub fn backup_config(b: &BackupSpec) -> Result<BackupConfig, BuildError> {
    let secs = |field: &str, v: &str| {
        BackupSpec::seconds(v).ok_or_else(|| {
            BuildError::Backup(format!(
                "{field} {v:?} is not a number and a unit (s, m, h, d)"
            ))
        })
    };
    if b.store.bucket.is_empty() || b.store.credentials_secret.is_empty() {
        return Err(BuildError::Backup(
            "store.bucket and store.credentialsSecret are required".into(),
        ));
    }
    Ok(BackupConfig {
        store: StoreConfig {
            endpoint: b.store.endpoint.clone(),
            bucket: b.store.bucket.clone(),
            prefix: b.store.prefix.clone().unwrap_or_default(),
            region: b.store.region.clone().unwrap_or_else(|| "us-east-1".into()),
            path_style: b.store.path_style,
            access_key_id: None,
            secret_access_key: None,
        },
        max_delay_millis: Some(b.max_shipping_delay_millis),
        snapshot_interval_seconds: Some(secs("snapshotInterval", &b.snapshot_interval)?),
        retention_seconds: Some(secs("retention", &b.retention)?),
        checkpoint_bytes: None,
    })
}

/// The engine container's environment: where its admin tokens are (a file, so they
/// rotate without a restart), and with backup on, the store's credentials from the Secret
/// `spec.backup.store.credentialsSecret` names.
fn engine_env(tenant: &Tenant) -> serde_json::Value {
    let from = |name: &str, secret: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
    let mut env = vec![json!({"name": "TENANTDB_ADMIN_TOKEN_FILE",
                              "value": format!("{CREDENTIALS_DIR}/{}", super::admin_token::ACCEPTED_KEY)})];
    if let Some(b) = &tenant.spec.backup {
        let s = &b.store.credentials_secret;
        env.push(from("TENANTDB_BACKUP_ACCESS_KEY_ID", s, BACKUP_ACCESS_KEY));
        env.push(from(
            "TENANTDB_BACKUP_SECRET_ACCESS_KEY",
            s,
            BACKUP_SECRET_KEY,
        ));
    }
    json!(env)
}

/// Keys of the backup credentials Secret.
pub const BACKUP_ACCESS_KEY: &str = "accessKeyId";
/// See [`BACKUP_ACCESS_KEY`].
pub const BACKUP_SECRET_KEY: &str = "secretAccessKey";

/// Everything a Tenant wants. `existing` is the engine StatefulSet as it is now: its
/// volume claim templates are immutable, so they are kept as they are (a larger tier's
/// storage reaches the volume by expanding the claim, see [`wanted_storage`]).
pub fn desired(
    tenant: &Tenant,
    ctx: &BuildContext,
    existing: Option<&StatefulSet>,
) -> Result<Desired, BuildError> {
    let name = tenant.name_any();
    let ns = tenant.namespace().unwrap_or_default();
    let n = names(&name);
    let owner = owner(tenant)?;
    let labels = labels(tenant);
    let selector = selector_labels(&name);
    let tier = ctx.tiers.get(tenant.spec.tier);
    let limits = effective_limits(tier, tenant.spec.quota.as_ref())?;
    let config = engine_config(tenant, &limits, tier, ctx)?;
    let config_text = config.to_yaml();
    let config_hash = hex::encode(&Sha256::digest(config_text.as_bytes())[..8]);
    let meta = |obj_name: &str| json!({"name": obj_name, "namespace": ns, "labels": labels, "ownerReferences": [owner]});

    let config_map = typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&n.config),
            "data": {CONFIG_KEY: config_text}
        }),
    )?;
    let headless_service = typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(&n.headless),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector,
                     "ports": [{"name": "https", "port": ENGINE_PORT, "targetPort": "https"}]}
        }),
    )?;
    let members = replicas(tenant);
    let with_role = |role: &str| {
        let mut s = selector.clone();
        s.insert(ROLE_LABEL.to_string(), role.to_string());
        s
    };
    // With standbys only the primary serves clients; alone, the one pod does.
    let primary = if members > 1 {
        with_role("primary")
    } else {
        selector.clone()
    };
    let client_service = |name: &str, sel: &BTreeMap<String, String>| {
        typed(
            "Service",
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": meta(name),
                "spec": {"type": "ClusterIP", "selector": sel,
                         "ports": [{"name": "https", "port": ENGINE_PORT, "targetPort": "https"}]}
            }),
        )
    };
    let service = client_service(&n.engine, &primary)?;
    let rw_service = client_service(&format!("{}-rw", n.engine), &primary)?;
    let ro_service = client_service(&format!("{}-ro", n.engine), &with_role("standby"))?;

    let resources = json!({"cpu": limits.cpu, "memory": limits.memory});
    let requests = match config
        .limits
        .cpu_millis
        .map(|m| (m, cpu_request_millis(tenant.spec.priority, m)))
    {
        Some((limit, request)) if request < limit => {
            json!({"cpu": format!("{request}m"), "memory": limits.memory})
        }
        _ => resources.clone(),
    };
    let when_deleted = match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    let mut claim_spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": limits.storage}}});
    if let Some(sc) = &ctx.storage_class {
        claim_spec["storageClassName"] = json!(sc);
    }
    let mut pod_labels = labels.clone();
    pod_labels.remove("app.kubernetes.io/managed-by");
    let mut pod_spec = json!({
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534, "runAsNonRoot": true,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "engine",
            "image": ctx.engine_image,
            "imagePullPolicy": ctx.image_pull_policy,
            "args": ["serve", "--data-dir", "/data", "--listen", format!("0.0.0.0:{ENGINE_PORT}"),
                     "--config", format!("/etc/tenantdb/{CONFIG_KEY}"),
                     "--tls-cert", format!("{TLS_DIR}/{}", tls::TLS_CERT_KEY),
                     "--tls-key", format!("{TLS_DIR}/{}", tls::TLS_KEY_KEY)],
            "env": engine_env(tenant),
            "ports": [{"name": "https", "containerPort": ENGINE_PORT}],
            "resources": {"requests": requests, "limits": resources},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 2, "failureThreshold": 3},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 10, "failureThreshold": 6},
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                             {"name": "config", "mountPath": "/etc/tenantdb", "readOnly": true},
                             {"name": "tls", "mountPath": TLS_DIR, "readOnly": true},
                             {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true}]
        }],
        // The TLS Secret as a volume (not subPath): the kubelet brings a renewed
        // certificate into the running pod and the engine picks it up.
        "volumes": [{"name": "config", "configMap": {"name": n.config}},
                    {"name": "tls", "secret": {"secretName": n.tls, "defaultMode": 0o440,
                                               "items": [{"key": tls::TLS_CERT_KEY, "path": tls::TLS_CERT_KEY},
                                                         {"key": tls::TLS_KEY_KEY, "path": tls::TLS_KEY_KEY},
                                                         {"key": tls::CA_CERT_KEY, "path": tls::CA_CERT_KEY}]}},
                    {"name": "credentials", "secret": {"secretName": n.credentials, "defaultMode": 0o440,
                                                       "items": [{"key": super::admin_token::ACCEPTED_KEY,
                                                                  "path": super::admin_token::ACCEPTED_KEY}]}}]
    });
    if members > 1 {
        super::members::add_agent(&mut pod_spec, &name, ctx);
    }
    if let Some(sel) = &tenant.spec.node_selector {
        pod_spec["nodeSelector"] = json!(sel);
    }
    if let Some(t) = &tenant.spec.tolerations {
        pod_spec["tolerations"] = json!(t);
    }
    if let Some(a) = &tenant.spec.affinity {
        pod_spec["affinity"] = json!(a);
    }
    let claim_templates = match existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
    {
        Some(kept) => json!(kept),
        None => json!([{"metadata": {"name": "data", "labels": selector}, "spec": claim_spec}]),
    };
    let stateful_set = typed(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(&n.engine),
            "spec": {
                "replicas": if tenant.spec.suspended { 0 } else { members },
                "serviceName": n.headless,
                "selector": {"matchLabels": selector},
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate"},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": {"tenantdb.io/config-hash": config_hash}},
                    "spec": pod_spec
                },
                "volumeClaimTemplates": claim_templates
            }
        }),
    )?;
    let disruption_budget = typed(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(&n.engine),
            // With standbys one member may go (a drain): the others take over.
            "spec": {"maxUnavailable": if members > 1 { 1 } else { 0 }, "selector": {"matchLabels": selector}}
        }),
    )?;
    let network_policy = typed(
        "NetworkPolicy",
        network_policy(tenant, ctx, meta(&n.engine), &selector),
    )?;
    let member_access = (members > 1)
        .then(|| super::members::access(&name, &meta(&member_account(&name))))
        .transpose()?;
    Ok(Desired {
        limits,
        config_map,
        headless_service,
        service,
        stateful_set,
        disruption_budget,
        network_policy,
        rw_service,
        ro_service,
        member_access,
    })
}

/// Name of the data volume claim of a tenant's engine pod.
pub fn data_claim(tenant: &str) -> String {
    format!("data-{}-0", names(tenant).engine)
}

/// The size the data volume must grow to, when `current` (its requested size) is
/// smaller than the tier's storage; `None` when it is large enough or a size is unreadable.
pub fn wanted_storage(limits: &EffectiveLimits, current: &str) -> Option<String> {
    let want = quantity::bytes(&limits.storage).ok()?;
    let have = quantity::bytes(current).ok()?;
    (want > have).then(|| limits.storage.clone())
}

/// The credentials Secret, created once and never overwritten: the admin token the
/// operator presents to the engine, and the engine's endpoint. (No password: nothing in
/// the engine takes one; tenants' applications use their databases' tokens.)
pub fn credentials_secret(tenant: &Tenant, admin_token: &str) -> Result<Secret, BuildError> {
    let name = tenant.name_any();
    typed(
        "Secret",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": names(&name).credentials, "namespace": tenant.namespace(), "labels": labels(tenant),
                         "ownerReferences": [owner(tenant)?]},
            "type": "Opaque",
            "stringData": {ADMIN_TOKEN_KEY: admin_token,
                           super::admin_token::ACCEPTED_KEY: format!("{admin_token}\n"),
                           "endpoint": endpoint(&name, &tenant.namespace().unwrap_or_default())}
        }),
    )
}

/// Why an existing Secret named like one of `tenant`'s is not one this operator made
/// for it (its labels do not say so); `None` when it is.
pub fn foreign_secret(secret: &Secret, tenant: &Tenant) -> Option<String> {
    let name = tenant.name_any();
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let ours = labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some("tenantdb-operator")
        && labels.get(TENANT_LABEL) == Some(&name);
    (!ours).then(|| format!(
        "Secret {} exists and was not made by the operator for tenant {name} (labels app.kubernetes.io/managed-by=tenantdb-operator, {TENANT_LABEL}={name}); delete or rename it",
        secret.name_any()
    ))
}

/// Metadata of a child `name` of `tenant`: its namespace, labels and owner.
pub fn child_meta(tenant: &Tenant, name: &str) -> Result<serde_json::Value, BuildError> {
    Ok(
        json!({"name": name, "namespace": tenant.namespace(), "labels": labels(tenant),
              "ownerReferences": [owner(tenant)?]}),
    )
}

/// Why an existing Secret named like `tenant`'s credentials is not one this operator
/// made for it (so its token must not be trusted): labels that do not say so, or an
/// empty admin token. `None` when it is its own.
pub fn foreign_credentials(secret: &Secret, tenant: &Tenant) -> Option<String> {
    if let Some(why) = foreign_secret(secret, tenant) {
        return Some(why);
    }
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(ADMIN_TOKEN_KEY))
        .map(|v| v.0.clone())
        .unwrap_or_default();
    if String::from_utf8_lossy(&token).trim().is_empty() {
        return Some(format!(
            "Secret {} has an empty {ADMIN_TOKEN_KEY}: an engine without an admin token would take anyone as admin; delete the Secret and the operator makes a new one",
            secret.name_any()
        ));
    }
    None
}

/// A random secret of `len` URL-safe characters.
pub fn random_secret(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}
