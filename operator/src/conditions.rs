//! Status conditions: set one, keeping its lastTransitionTime while its status holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Set condition `type_` in `conditions`. The transition time changes only when the
/// status does, so `kubectl get -o yaml` shows how long a state has held.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Ready",
            false,
            "Provisioning",
            "starting",
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        set(
            &mut c,
            "Ready",
            false,
            "Provisioning",
            "still starting",
            Some(1),
            &t("2026-01-01T00:01:00Z"),
        );
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(c[0].message, "still starting");
        set(
            &mut c,
            "Ready",
            true,
            "EngineReady",
            "serving",
            Some(2),
            &t("2026-01-01T00:02:00Z"),
        );
        assert_eq!(c[0].last_transition_time, t("2026-01-01T00:02:00Z"));
        assert!(is_true(&c, "Ready"));
        assert_eq!(c.len(), 1);
    }
}
