//! The engine's configuration file: who the tenant is and the tier limits the engine
//! enforces itself. The operator writes it into the tenant's ConfigMap from this same type.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Failure to read the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading engine config {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid YAML for [`EngineConfig`].
    #[error("parsing engine config {path}: {source}")]
    Parse {
        /// File path.
        path: String,
        /// Underlying error.
        source: serde_yaml::Error,
    },
}

/// Everything the engine is told about its tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// Tenant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service tier name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// How the tenant's work is weighed against other tenants' when CPU is short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Limits the engine enforces itself (CPU and memory come from the cgroup).
    #[serde(default)]
    pub limits: EngineLimits,
    /// SQL run once into the seed database (`PDB$SEED`) when it is first made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_sql: Option<String>,
    /// The tier's service-level targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaTargets>,
    /// The tier's price and the price list for usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<BillingConfig>,
    /// Milliseconds a Hrana stream may stay idle before it ends and its open transaction
    /// rolls back (default [`DEFAULT_STREAM_IDLE_MILLIS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_millis: Option<u64>,
    /// Continuous backup to an S3-compatible store (`docs/backup.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupConfig>,
    /// Hot standbys (`docs/ha.md`): present when the tenant has more than one member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::ReplicationConfig>,
}

/// How long an idle stream lives by default: 10 s, as libSQL's own server.
pub const DEFAULT_STREAM_IDLE_MILLIS: u64 = 10_000;

/// A tenant's priority (the Tenant's `spec.priority`): its CPU weight against other
/// tenants when the CPU is short. Standalone, it is written into the tenant's own cgroup.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Priority {
    /// Four times the default weight.
    Critical,
    /// Twice the default weight.
    High,
    /// The default weight.
    #[default]
    Medium,
    /// Half the default weight.
    Low,
    /// A tenth of the default weight: runs on what others leave.
    BestEffort,
}

impl Priority {
    /// cgroup v2 `cpu.weight` (the kernel's default is 100).
    pub fn cpu_weight(self) -> u32 {
        match self {
            Priority::Critical => 400,
            Priority::High => 200,
            Priority::Medium => 100,
            Priority::Low => 50,
            Priority::BestEffort => 10,
        }
    }

    /// cgroup v1 `cpu.shares` in the same ratios (the kernel's default is 1024).
    pub fn cpu_shares(self) -> u64 {
        u64::from(self.cpu_weight()) * 1024 / 100
    }
}

/// Service-level targets of a tier (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlaTargets {
    /// Uptime target in percent (e.g. 99.9).
    pub uptime_percent: f64,
    /// Average request latency target in milliseconds.
    pub max_avg_latency_ms: f64,
    /// Error rate (errors per request) above which a violation is reported.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
}

fn default_max_error_rate() -> f64 {
    0.01
}

/// What a tenant pays: the tier's base price and usage at a price list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BillingConfig {
    /// ISO 4217 currency of every amount.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The tier's base price per month.
    pub base_price_per_month: f64,
    /// Prices of usage beyond the base.
    #[serde(default)]
    pub prices: PriceList,
}

fn default_currency() -> String {
    "USD".into()
}

/// Unit prices of metered usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceList {
    /// Per million data-plane requests.
    pub per_million_requests: f64,
    /// Per GiB-month of storage (averaged over the period).
    pub per_gib_month_storage: f64,
    /// Per GiB of response bytes.
    pub per_gib_egress: f64,
    /// Per hour of CPU time spent in statements.
    pub per_cpu_hour: f64,
}

impl Default for PriceList {
    fn default() -> Self {
        PriceList {
            per_million_requests: 0.40,
            per_gib_month_storage: 0.10,
            per_gib_egress: 0.09,
            per_cpu_hour: 0.05,
        }
    }
}

/// Tier limits the engine enforces itself; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineLimits {
    /// CPU in millicores (the pod's cgroup enforces it in Kubernetes; standalone, the
    /// tenant's own cgroup does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Memory in bytes (likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Storage bytes a second, pages read plus written (unset: IOPS alone limits IO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_bytes_per_second: Option<u64>,
    /// IO operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    /// Bandwidth in megabits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<u32>,
    /// Concurrent sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u32>,
    /// Requests allowed at once above the hourly rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Storage for all databases, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// Pluggable databases allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_databases: Option<u32>,
}

impl EngineConfig {
    /// How long a Hrana stream may stay idle.
    pub fn stream_idle_timeout(&self) -> std::time::Duration {
        let ms = self
            .stream_idle_timeout_millis
            .unwrap_or(DEFAULT_STREAM_IDLE_MILLIS)
            .max(1);
        std::time::Duration::from_millis(ms)
    }

    /// Parse YAML text.
    pub fn from_yaml(path: &str, text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })
    }

    /// Read a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_yaml(&name, &text)
    }

    /// Render as YAML (what the operator puts in the ConfigMap).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_yaml() {
        let cfg = EngineConfig {
            tenant: Some("acme".into()),
            tier: Some("gold".into()),
            limits: EngineLimits {
                iops: Some(10_000),
                storage_bytes: Some(1 << 30),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(EngineConfig::from_yaml("x", &cfg.to_yaml()).unwrap(), cfg);
    }

    #[test]
    fn priorities_weigh_in_the_kernel_s_ratios() {
        let cfg = EngineConfig::from_yaml("x", "priority: bestEffort").unwrap();
        assert_eq!(cfg.priority, Some(Priority::BestEffort));
        assert_eq!(
            Priority::default().cpu_shares(),
            1024,
            "medium is the kernel default"
        );
        assert_eq!(
            Priority::Critical.cpu_weight(),
            4 * Priority::Medium.cpu_weight()
        );
        assert_eq!(Priority::BestEffort.cpu_shares(), 102);
        let err = EngineConfig::from_yaml("x", "priority: urgent").unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_with_the_path() {
        let err = EngineConfig::from_yaml("/etc/e.yaml", "limits: {iopz: 3}").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/e.yaml") && msg.contains("iopz"), "{msg}");
    }
}
