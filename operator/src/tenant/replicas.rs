//! Pure: what a replicated Tenant's status says about its members, from their pods (the
//! role label and the replication annotation their agents write) and the primary Lease.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb_crds::{FailoverStatus, MemberStatus, TenantPhase, TenantStatus};
use tenantdb_engine_api::replication::ReplicationStatus;

use super::build::ROLE_LABEL;
use crate::conditions::set;
use crate::member::agent::STATUS_ANNOTATION;

/// A standby further behind than this many transactions is `ReplicationLagging`.
pub const LAGGING_TRANSACTIONS: u64 = 1_000;

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Each member as its pod says, sorted by name.
pub fn members(pods: &[Pod]) -> Vec<MemberStatus> {
    let mut out: Vec<MemberStatus> = pods
        .iter()
        .map(|p| {
            let reported: Option<ReplicationStatus> = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STATUS_ANNOTATION))
                .and_then(|t| serde_json::from_str(t).ok());
            let role = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ROLE_LABEL).cloned())
                .filter(|_| ready(p))
                .unwrap_or_else(|| "unknown".into());
            let standby = role == "standby";
            MemberStatus {
                name: p.metadata.name.clone().unwrap_or_default(),
                epoch: reported.as_ref().map(|r| r.epoch),
                lag_transactions: reported
                    .as_ref()
                    .filter(|_| standby)
                    .map(|r| r.lag_transactions),
                lag_bytes: reported.as_ref().filter(|_| standby).map(|r| r.lag_bytes),
                streaming: reported.as_ref().filter(|_| standby).map(|r| r.streaming),
                role,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The last change of primary, from the Lease.
pub fn last_failover(lease: Option<&Lease>) -> Option<FailoverStatus> {
    let spec = lease?.spec.as_ref()?;
    let epoch = spec.lease_transitions? as u64;
    Some(FailoverStatus {
        time: spec.acquire_time.as_ref()?.0.to_string(),
        to: spec.holder_identity.clone()?,
        epoch,
    })
}

/// Fold the members into `status` for a Tenant that wants `replicas` of them: Ready
/// while a primary serves, `Degraded` (`StandbyMissing`) while fewer standbys stream than
/// wanted, `ReplicationLagging` when one is far behind, and `NoPrimary` when none serves.
pub fn fold(
    status: &mut TenantStatus,
    replicas: i32,
    pods: &[Pod],
    lease: Option<&Lease>,
    generation: Option<i64>,
    now: &Time,
) {
    let members = members(pods);
    let primary = members.iter().any(|m| m.role == "primary");
    let streaming = members
        .iter()
        .filter(|m| m.role == "standby" && m.streaming == Some(true))
        .count() as i32;
    let lagging = members
        .iter()
        .filter_map(|m| m.lag_transactions)
        .max()
        .unwrap_or(0);
    let c = &mut status.conditions;
    let mut put = |type_: &str, on: bool, reason: &str, message: &str| {
        set(c, type_, on, reason, message, generation, now)
    };
    let suspended = status.phase == Some(TenantPhase::Suspended);
    if !suspended {
        if primary {
            put("Ready", true, "PrimaryReady", "the primary serves");
            if streaming < replicas - 1 {
                put(
                    "Degraded",
                    true,
                    "StandbyMissing",
                    &format!(
                        "{streaming} of {} standbys stream from the primary",
                        replicas - 1
                    ),
                );
                status.phase = Some(TenantPhase::Degraded);
            } else {
                put(
                    "Degraded",
                    false,
                    "Healthy",
                    "every standby streams from the primary",
                );
                if status.phase != Some(TenantPhase::Provisioning) {
                    status.phase = Some(TenantPhase::Ready);
                }
            }
        } else {
            put(
                "Ready",
                false,
                "NoPrimary",
                "no member is the primary: a failover is under way or no member can take over",
            );
            status.phase = Some(TenantPhase::Degraded);
        }
        put(
            "ReplicationLagging",
            lagging > LAGGING_TRANSACTIONS,
            if lagging > LAGGING_TRANSACTIONS {
                "Lagging"
            } else {
                "InStep"
            },
            &format!("the furthest standby is {lagging} transactions behind"),
        );
    }
    status.members = members;
    status.last_failover = last_failover(lease);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, role: &str, ready: bool, annotation: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {ROLE_LABEL: role},
                         "annotations": annotation.map(|a| serde_json::json!({STATUS_ANNOTATION: a})).unwrap_or_default()},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    fn cond<'a>(
        s: &'a TenantStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    const STREAMING: &str = r#"{"role":"standby","epoch":2,"writable":false,"streaming":true,"caughtUp":true,"standbys":0,"durability":"required","unreplicatedCommits":0,"files":{},"lagTransactions":3,"lagBytes":100,"lastAppliedMs":null}"#;

    #[test]
    fn a_primary_and_a_streaming_standby_are_ready_and_healthy() {
        let mut s = TenantStatus::default();
        let pods = [
            pod("t-engine-0", "primary", true, None),
            pod("t-engine-1", "standby", true, Some(STREAMING)),
        ];
        fold(&mut s, 2, &pods, None, Some(1), &now());
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(s.members[1].lag_transactions, Some(3));
        assert_eq!(s.members[1].streaming, Some(true));
    }

    #[test]
    fn a_missing_standby_degrades_and_no_primary_is_not_ready() {
        let mut s = TenantStatus::default();
        fold(
            &mut s,
            2,
            &[
                pod("t-engine-0", "primary", true, None),
                pod("t-engine-1", "standby", false, None),
            ],
            None,
            Some(1),
            &now(),
        );
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Degraded").reason, "StandbyMissing");
        assert_eq!(s.phase, Some(TenantPhase::Degraded));
        let mut s = TenantStatus::default();
        fold(
            &mut s,
            2,
            &[pod("t-engine-0", "primary", false, None)],
            None,
            Some(1),
            &now(),
        );
        assert_eq!(cond(&s, "Ready").reason, "NoPrimary");
    }
}
