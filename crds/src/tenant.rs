//! `Tenant`: one customer's isolated database container (an engine StatefulSet).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tenant: a customer's container database, sized by its service tier.
///
/// The operator turns it into an engine StatefulSet (with Services, a Secret, a
/// ConfigMap, a PodDisruptionBudget and a NetworkPolicy) whose pod resources come
/// from the tier. PluggableDatabases name it in `spec.tenant`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    shortname = "tnt",
    category = "tenantdb",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Databases","type":"integer","jsonPath":".status.databases"}"#,
    printcolumn = r#"{"name":"Storage used","type":"string","jsonPath":".status.storageUsed"}"#,
    printcolumn = r#"{"name":"SLA met","type":"boolean","jsonPath":".status.sla.compliant"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 45").message("Tenant names are at most 45 characters, so the names of the objects made from them stay within 63"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("Tenant names start with a letter and hold only lowercase letters, digits and '-'"),
    validation = Rule::new("!has(self.spec.enforceLockdownProfile) || !self.spec.enforceLockdownProfile || has(self.spec.lockdownProfile)").message("spec.enforceLockdownProfile needs spec.lockdownProfile: the profile to enforce")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Service tier: sets CPU, memory, storage, IOPS, bandwidth, connections, request rate and SLA targets.
    pub tier: Tier,
    /// CPU weight against other tenants when CPU is short. In a pod, low asks for half its CPU limit as its request and bestEffort a quarter (the kubelet weighs pods by request); standalone, it is the tenant cgroup's cpu.weight (critical 400, high 200, medium 100, low 50, bestEffort 10).
    #[serde(default)]
    pub priority: Priority,
    /// Hibernate: scale the engine to zero and keep its volume. Set back to false to resume.
    #[serde(default)]
    pub suspended: bool,
    /// Owning organisation, for reports and billing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Free-form tags copied to the engine's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Per-field overrides of the tier's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaOverrides>,
    /// Default LockdownProfile for this tenant's databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockdown_profile: Option<String>,
    /// Enforce `lockdownProfile` on every database of this tenant: a database cannot opt
    /// out or name another profile (it is then Invalid, reason LockdownProfileEnforced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce_lockdown_profile: bool,
    /// What happens to the data volume when the Tenant is deleted: `Retain` (default) keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Node labels the engine pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations for the engine pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity rules for the engine pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Continuous backup of every database to S3-compatible object storage, for
    /// point-in-time restore (`PluggableDatabase.spec.source.restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Engine members: 1, or 2 or 3 for a primary with hot standbys elected through a
    /// Lease (`docs/ha.md`).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3").message("replicas is 1, 2 or 3"))]
    pub replicas: i32,
    /// With standbys, when a commit is acknowledged: `required` once a standby has it
    /// durably, `preferred` (the default) as `required` while a standby is connected and
    /// at once while none is, `async` at once.
    #[serde(default)]
    pub durability: Durability,
}

fn default_replicas() -> i32 {
    1
}

/// When a primary with standbys acknowledges a commit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Durability {
    /// At once; standbys follow.
    Async,
    /// Once a standby has written it durably; an error when none does in time.
    Required,
    /// As `required` while a standby is connected, as `async` while none is.
    #[default]
    Preferred,
}

/// One engine member as the operator last saw it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// `primary`, `standby`, or `unknown` before its agent labelled it.
    pub role: String,
    /// Lease epoch the member last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Standby: transactions it has not applied yet, as its primary last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_transactions: Option<u64>,
    /// The same in bytes of WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Standby: streaming from the primary now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
}

/// The last change of primary.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailoverStatus {
    /// When (RFC 3339).
    pub time: String,
    /// The member that took over.
    pub to: String,
    /// Lease epoch after it.
    pub epoch: u64,
}

/// Continuous backup: where to, how long to keep, how often to snapshot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The S3-compatible object store.
    pub store: ObjectStoreSpec,
    /// Recovery window: every instant this far back can be restored (`7d`, `36h`).
    #[serde(default = "default_retention")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h|d)$')").message("retention is a number and a unit: s, m, h or d (7d)"))]
    pub retention: String,
    /// Time between base snapshots (new generations): `24h`.
    #[serde(default = "default_snapshot_interval")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h|d)$')").message("snapshotInterval is a number and a unit: s, m, h or d (24h)"))]
    pub snapshot_interval: String,
    /// The most a commit waits before it ships, in milliseconds: what a lost volume can
    /// lose at worst.
    #[serde(default = "default_max_delay")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 3600000").message("maxShippingDelayMillis is between 10 and 3600000"))]
    pub max_shipping_delay_millis: u64,
}

/// An S3-compatible object store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// Endpoint URL (`https://s3.eu-west-1.amazonaws.com`, `http://minio.storage:9000`).
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("store.endpoint is an http:// or https:// URL"))]
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), as most S3-compatible stores want.
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// A Secret in the Tenant's namespace with keys `accessKeyId` and `secretAccessKey`.
    pub credentials_secret: String,
}

fn default_retention() -> String {
    "7d".into()
}

fn default_snapshot_interval() -> String {
    "24h".into()
}

fn default_max_delay() -> u64 {
    1000
}

fn default_true() -> bool {
    true
}

impl BackupSpec {
    /// Seconds in a `retention` or `snapshotInterval` value (`7d`, `24h`, `90m`, `30s`).
    pub fn seconds(value: &str) -> Option<u64> {
        let unit = value.chars().last()?;
        let n: u64 = value[..value.len() - 1].parse().ok()?;
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        n.checked_mul(mult).filter(|s| *s > 0)
    }
}

/// A service tier (DESIGN §3); the operator's tier table gives its limits.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// 1 CPU, 2Gi, 50Gi storage.
    Bronze,
    /// 2 CPU, 4Gi, 100Gi storage.
    Silver,
    /// 4 CPU, 8Gi, 250Gi storage.
    Gold,
    /// 8 CPU, 16Gi, 500Gi storage.
    Platinum,
}

impl Tier {
    /// Every tier, cheapest first.
    pub const ALL: [Tier; 4] = [Tier::Bronze, Tier::Silver, Tier::Gold, Tier::Platinum];

    /// The tier's name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Bronze => "bronze",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Platinum => "platinum",
        }
    }
}

/// How much CPU this tenant gets against others when CPU is short.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Priority {
    /// Four times medium's weight.
    Critical,
    /// Twice medium's weight.
    High,
    /// The default.
    #[default]
    Medium,
    /// Half medium's weight.
    Low,
    /// A tenth of medium's weight: runs on what others leave.
    BestEffort,
}

/// Whether the data volume outlives the Tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the volume with the Tenant.
    Delete,
    /// Keep the volume (the PersistentVolumeClaim stays) after the Tenant is gone.
    #[default]
    Retain,
}

/// Overrides of single tier limits; an unset field keeps the tier's value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaOverrides {
    /// CPU, as a Kubernetes quantity (e.g. `500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("quota.cpu must be a positive quantity such as 500m or 2"))]
    #[schemars(length(max = 32))]
    pub cpu: Option<String>,
    /// Memory, as a Kubernetes quantity (e.g. `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("quota.memory must be a positive quantity such as 512Mi or 4Gi"))]
    #[schemars(length(max = 32))]
    pub memory: Option<String>,
    /// Storage for the data volume, as a Kubernetes quantity (e.g. `10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("quota.storage must be a positive quantity such as 10Gi"))]
    #[schemars(length(max = 32))]
    pub storage: Option<String>,
    /// IO operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub iops: Option<u32>,
    /// Network bandwidth in megabits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bandwidth_mbps: Option<u32>,
    /// Concurrent sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub connections: Option<u32>,
    /// Requests per hour (steady rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_hour: Option<u32>,
    /// Requests allowed at once above the steady rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// Pluggable databases this tenant may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_databases: Option<u32>,
}

/// What is true of the tenant now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Summary: Pending, Provisioning, Ready, Suspended, Degraded or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// Ready, Progressing, Degraded and Suspended, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The limits in force: the tier with the quota overrides applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<EffectiveLimits>,
    /// In-cluster address of the engine's HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret holding the operator's admin token for the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Pluggable databases in the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<u32>,
    /// Storage used by all databases, as a quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_used: Option<String>,
    /// Service level this billing period, as the engine measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaSummary>,
    /// Usage statistics this billing period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageSummary>,
    /// Engine members with their role and lag (with `replicas` above 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The last change of primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverStatus>,
}

/// A tenant's service level this period.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SlaSummary {
    /// Every target of the tier met.
    pub compliant: bool,
    /// Uptime across restarts, percent (as text, e.g. "99.95").
    pub uptime_percent: String,
    /// 99th percentile request latency, ms.
    pub p99_latency_ms: String,
    /// Targets missed (`metric/severity`), empty when compliant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
}

/// A tenant's usage statistics this period.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// Billing period, `YYYY-MM`.
    pub period: String,
    /// Data-plane requests.
    pub requests: u64,
    /// The busiest minute since the engine started.
    pub peak_requests_per_minute: u64,
    /// Average response time, ms (as text).
    pub avg_response_ms: String,
    /// Errors per request (as text).
    pub error_rate: String,
    /// Storage growth, as a quantity per day (e.g. "12Mi").
    pub storage_growth_per_day: String,
}

/// Phase of a tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantPhase {
    /// Accepted, nothing created yet.
    Pending,
    /// Objects applied, engine not ready yet.
    Provisioning,
    /// The engine serves.
    Ready,
    /// Scaled to zero on request; the volume is kept.
    Suspended,
    /// Was ready, is not now.
    Degraded,
    /// The spec cannot be served; see the Ready condition.
    Invalid,
}

impl TenantPhase {
    /// The phase's name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantPhase::Pending => "Pending",
            TenantPhase::Provisioning => "Provisioning",
            TenantPhase::Ready => "Ready",
            TenantPhase::Suspended => "Suspended",
            TenantPhase::Degraded => "Degraded",
            TenantPhase::Invalid => "Invalid",
        }
    }
}

/// The limits the tenant's engine runs with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveLimits {
    /// CPU limit (= request).
    pub cpu: String,
    /// Memory limit (= request).
    pub memory: String,
    /// Data volume size.
    pub storage: String,
    /// IO operations per second.
    pub iops: u32,
    /// Bandwidth in megabits per second.
    pub bandwidth_mbps: u32,
    /// Concurrent sessions.
    pub connections: u32,
    /// Requests per hour.
    pub requests_per_hour: u32,
    /// Burst above the hourly rate.
    pub burst: u32,
    /// Maximum number of pluggable databases.
    pub max_databases: u32,
}
