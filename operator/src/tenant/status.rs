//! Pure: what a Tenant's status says, given what was observed of its StatefulSet.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb_crds::{EffectiveLimits, Tenant, TenantPhase, TenantStatus};

use crate::conditions::{is_true, set};

/// How far the engine StatefulSet has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Scaled to zero on request, and no pod left.
    Suspended,
    /// Scaling down to zero.
    Suspending,
    /// Every replica ready and on the current revision.
    Ready,
    /// A new revision is rolling out.
    Rolling,
    /// Not ready yet (creating, starting, or failing).
    NotReady,
}

/// Classify a StatefulSet as observed.
pub fn engine_state(sts: Option<&StatefulSet>, suspended: bool) -> EngineState {
    let Some(sts) = sts else {
        return EngineState::NotReady;
    };
    let status = sts.status.clone().unwrap_or_default();
    let observed = status.observed_generation == sts.metadata.generation;
    if suspended {
        return if status.replicas == 0 && observed {
            EngineState::Suspended
        } else {
            EngineState::Suspending
        };
    }
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0) >= wanted;
    let current =
        status.update_revision.is_some() && status.current_revision == status.update_revision;
    let updated = status.updated_replicas.unwrap_or(0) >= wanted;
    match (observed && ready && current && updated, ready) {
        (true, _) => EngineState::Ready,
        (false, true) => EngineState::Rolling,
        _ if !current && status.replicas > 0 => EngineState::Rolling,
        _ => EngineState::NotReady,
    }
}

/// The SLA and usage summaries of a Tenant from its engine's status.
pub fn engine_figures(
    summary: &crate::engine_client::EngineSummary,
) -> (
    Option<tenantdb_crds::SlaSummary>,
    Option<tenantdb_crds::UsageSummary>,
) {
    let sla = summary.sla.as_ref().map(|s| tenantdb_crds::SlaSummary {
        compliant: s.compliant,
        uptime_percent: format!("{:.2}", s.uptime_percent),
        p99_latency_ms: format!("{:.1}", s.p99_latency_ms),
        violations: s
            .violations
            .iter()
            .map(|v| format!("{}/{}/{}", v.scope, v.metric, v.severity))
            .collect(),
    });
    let usage = summary.stats.as_ref().map(|s| tenantdb_crds::UsageSummary {
        period: s.period.clone(),
        requests: s.requests,
        peak_requests_per_minute: s.peak_requests_per_minute,
        avg_response_ms: format!("{:.2}", s.avg_response_ms),
        error_rate: format!("{:.4}", s.error_rate),
        storage_growth_per_day: crate::quantity::format_bytes(
            s.storage_growth_bytes_per_day.max(0.0) as u64,
        ),
    });
    (sla, usage)
}

/// Status for a Tenant whose objects were applied, with the engine in `state`.
pub fn applied(
    tenant: &Tenant,
    limits: EffectiveLimits,
    endpoint: String,
    credentials: String,
    state: EngineState,
    now: &Time,
) -> TenantStatus {
    let mut status = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let was_ready = is_true(&status.conditions, "Ready");
    let c = &mut status.conditions;
    let mut put = |type_: &str, on: bool, reason: &str, message: &str| {
        set(c, type_, on, reason, message, generation, now)
    };
    let phase = match state {
        EngineState::Ready => {
            put("Ready", true, "EngineReady", "the engine serves");
            put("Progressing", false, "Stable", "every change is rolled out");
            put("Degraded", false, "Healthy", "the engine is ready");
            TenantPhase::Ready
        }
        EngineState::Rolling => {
            put(
                "Ready",
                true,
                "EngineReady",
                "the engine serves while a change rolls out",
            );
            put(
                "Progressing",
                true,
                "RollingUpdate",
                "the engine pod is being replaced with the new spec",
            );
            put("Degraded", false, "Healthy", "the engine is ready");
            TenantPhase::Provisioning
        }
        EngineState::NotReady => {
            put(
                "Ready",
                false,
                "EngineNotReady",
                "the engine pod is not ready yet",
            );
            put(
                "Progressing",
                true,
                "Provisioning",
                "waiting for the engine pod to become ready",
            );
            if was_ready {
                put(
                    "Degraded",
                    true,
                    "EngineNotReady",
                    "the engine was ready and is not now; see the pod's events",
                );
                TenantPhase::Degraded
            } else {
                TenantPhase::Provisioning
            }
        }
        EngineState::Suspending => {
            put(
                "Ready",
                false,
                "Suspended",
                "spec.suspended is true: the engine is scaled to zero, its volume kept",
            );
            put(
                "Progressing",
                true,
                "Suspending",
                "scaling the engine to zero",
            );
            put("Degraded", false, "Healthy", "suspended on request");
            TenantPhase::Suspended
        }
        EngineState::Suspended => {
            put(
                "Ready",
                false,
                "Suspended",
                "spec.suspended is true: the engine is scaled to zero, its volume kept",
            );
            put("Progressing", false, "Stable", "suspended");
            put("Degraded", false, "Healthy", "suspended on request");
            TenantPhase::Suspended
        }
    };
    let suspended = matches!(state, EngineState::Suspending | EngineState::Suspended);
    if suspended {
        put("Suspended", true, "SuspendRequested", "hibernating");
    } else {
        put("Suspended", false, "Active", "running");
    }
    status.phase = Some(phase);
    status.observed_generation = generation;
    status.limits = Some(limits);
    status.endpoint = Some(endpoint);
    status.credentials_secret = Some(credentials);
    status
}

/// Status for a Tenant whose spec cannot be served: a reason and a message, nothing applied.
pub fn invalid(tenant: &Tenant, reason: &str, message: &str, now: &Time) -> TenantStatus {
    let mut status = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    set(
        &mut status.conditions,
        "Ready",
        false,
        reason,
        message,
        generation,
        now,
    );
    set(
        &mut status.conditions,
        "Progressing",
        false,
        reason,
        "waiting for the spec to be corrected",
        generation,
        now,
    );
    status.phase = Some(TenantPhase::Invalid);
    status.observed_generation = generation;
    status
}
