//! The service tier table (DESIGN §3): defaults, loading a replacement, and the
//! effective limits of a tenant (its tier with its quota overrides applied).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tenantdb_crds::{EffectiveLimits, QuotaOverrides, Tier};

use crate::quantity;

/// What one tier gives a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    /// CPU request = limit.
    pub cpu: String,
    /// Memory request = limit.
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
    /// Pluggable databases per tenant.
    pub max_databases: u32,
    /// Uptime target in percent.
    pub sla_uptime_percent: f64,
    /// Average latency target in milliseconds.
    pub max_avg_latency_ms: u32,
    /// Base price per month.
    pub price_per_month: f64,
}

/// All four tiers. A replacement table must define every one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTable {
    /// Bronze.
    pub bronze: TierSpec,
    /// Silver.
    pub silver: TierSpec,
    /// Gold.
    pub gold: TierSpec,
    /// Platinum.
    pub platinum: TierSpec,
}

/// A tier table or a tenant's limits that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The file could not be read.
    #[error("reading tier table {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not a tier table.
    #[error("parsing tier table {path}: {source}")]
    Parse {
        /// File path.
        path: String,
        /// Underlying error.
        source: serde_yaml::Error,
    },
    /// A quantity in the table or in a quota override is invalid.
    #[error("{field}: {source}")]
    Quantity {
        /// Which field.
        field: String,
        /// Underlying error.
        source: quantity::QuantityError,
    },
}

#[allow(clippy::too_many_arguments)]
fn tier(
    cpu: &str,
    memory: &str,
    storage: &str,
    iops: u32,
    mbps: u32,
    conns: u32,
    rph: u32,
    burst: u32,
    dbs: u32,
    sla: f64,
    lat: u32,
    price: f64,
) -> TierSpec {
    TierSpec {
        cpu: cpu.into(),
        memory: memory.into(),
        storage: storage.into(),
        iops,
        bandwidth_mbps: mbps,
        connections: conns,
        requests_per_hour: rph,
        burst,
        max_databases: dbs,
        sla_uptime_percent: sla,
        max_avg_latency_ms: lat,
        price_per_month: price,
    }
}

impl Default for TierTable {
    /// DESIGN §3.
    fn default() -> Self {
        TierTable {
            bronze: tier(
                "1", "2Gi", "50Gi", 1_000, 100, 50, 1_000, 50, 10, 99.0, 100, 100.0,
            ),
            silver: tier(
                "2", "4Gi", "100Gi", 3_000, 250, 100, 5_000, 100, 25, 99.5, 50, 250.0,
            ),
            gold: tier(
                "4", "8Gi", "250Gi", 10_000, 500, 250, 25_000, 250, 100, 99.9, 20, 500.0,
            ),
            platinum: tier(
                "8", "16Gi", "500Gi", 25_000, 1_000, 500, 100_000, 500, 500, 99.99, 10, 1_000.0,
            ),
        }
    }
}

impl TierTable {
    /// The spec of one tier.
    pub fn get(&self, t: Tier) -> &TierSpec {
        match t {
            Tier::Bronze => &self.bronze,
            Tier::Silver => &self.silver,
            Tier::Gold => &self.gold,
            Tier::Platinum => &self.platinum,
        }
    }

    /// Parse and check a YAML table.
    pub fn from_yaml(path: &str, text: &str) -> Result<Self, TierError> {
        let table: TierTable = serde_yaml::from_str(text).map_err(|source| TierError::Parse {
            path: path.into(),
            source,
        })?;
        for t in Tier::ALL {
            let s = table.get(t);
            for (field, value) in [
                ("cpu", &s.cpu),
                ("memory", &s.memory),
                ("storage", &s.storage),
            ] {
                quantity::parse(value).map_err(|source| TierError::Quantity {
                    field: format!("{}.{field}", t.as_str()),
                    source,
                })?;
            }
        }
        Ok(table)
    }

    /// Read a YAML table (the Helm value `tiers`, mounted from a ConfigMap).
    pub fn load(path: &Path) -> Result<Self, TierError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TierError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_yaml(&name, &text)
    }
}

/// The tier's limits with the quota overrides applied; every quantity checked.
pub fn effective_limits(
    spec: &TierSpec,
    quota: Option<&QuotaOverrides>,
) -> Result<EffectiveLimits, TierError> {
    let q = quota.cloned().unwrap_or_default();
    let check = |field: &str, value: String| -> Result<String, TierError> {
        quantity::parse(&value).map_err(|source| TierError::Quantity {
            field: field.into(),
            source,
        })?;
        Ok(value)
    };
    Ok(EffectiveLimits {
        cpu: check("quota.cpu", q.cpu.unwrap_or_else(|| spec.cpu.clone()))?,
        memory: check(
            "quota.memory",
            q.memory.unwrap_or_else(|| spec.memory.clone()),
        )?,
        storage: check(
            "quota.storage",
            q.storage.unwrap_or_else(|| spec.storage.clone()),
        )?,
        iops: q.iops.unwrap_or(spec.iops),
        bandwidth_mbps: q.bandwidth_mbps.unwrap_or(spec.bandwidth_mbps),
        connections: q.connections.unwrap_or(spec.connections),
        requests_per_hour: q.requests_per_hour.unwrap_or(spec.requests_per_hour),
        burst: q.burst.unwrap_or(spec.burst),
        max_databases: q.max_databases.unwrap_or(spec.max_databases),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_is_design_section_3() {
        let t = TierTable::default();
        assert_eq!(
            (
                t.bronze.cpu.as_str(),
                t.bronze.memory.as_str(),
                t.bronze.storage.as_str()
            ),
            ("1", "2Gi", "50Gi")
        );
        assert_eq!(
            (
                t.platinum.cpu.as_str(),
                t.platinum.iops,
                t.platinum.requests_per_hour
            ),
            ("8", 25_000, 100_000)
        );
        assert_eq!(t.gold.burst, 250);
    }

    #[test]
    fn overrides_replace_single_fields() {
        let t = TierTable::default();
        let q = QuotaOverrides {
            memory: Some("3Gi".into()),
            iops: Some(1_500),
            ..Default::default()
        };
        let l = effective_limits(t.get(Tier::Bronze), Some(&q)).unwrap();
        assert_eq!(
            (l.cpu.as_str(), l.memory.as_str(), l.iops, l.connections),
            ("1", "3Gi", 1_500, 50)
        );
    }

    #[test]
    fn a_bad_override_names_its_field() {
        let q = QuotaOverrides {
            cpu: Some("-2".into()),
            ..Default::default()
        };
        let err = effective_limits(TierTable::default().get(Tier::Gold), Some(&q))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("quota.cpu:"), "{err}");
    }

    #[test]
    fn a_replacement_table_must_define_every_tier() {
        let mut yaml = serde_yaml::to_string(&TierTable::default()).unwrap();
        assert!(TierTable::from_yaml("t", &yaml).is_ok());
        yaml = yaml.replace("platinum:", "diamond:");
        assert!(TierTable::from_yaml("t", &yaml).is_err());
    }
}
