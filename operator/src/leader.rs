//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas
//! never reconcile at once. The leader renews every `renew_every`; if it cannot renew
//! within `renew_deadline` (or another holder took the Lease) it steps down by
//! returning from [`LeaderElector::hold`], and the process exits.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

/// Lease timing and identity.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease (the operator's).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    /// Another replica holds the Lease now.
    #[error("the Lease is now held by {0}")]
    TakenBy(String),
    /// Renewal failed for longer than the deadline.
    #[error("could not renew the Lease within {0:?}: {1}")]
    Deadline(Duration, String),
}

/// Acquires and holds a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

/// Whether `lease` may be taken by `me` at `now`.
pub fn can_take(lease: &Lease, me: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
}

impl LeaderElector {
    /// An elector for `cfg`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the Lease; `Ok(true)` when this replica holds it.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let me = &self.cfg.identity;
        match self.api.get_opt(&self.cfg.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                if !can_take(&lease, me, Timestamp::now()) {
                    return Ok(false);
                }
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(me.as_str());
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
                lease.spec =
                    Some(self.spec(if ours { spec.acquire_time } else { None }, transitions));
                // replace carries resourceVersion: a concurrent writer makes this a 409, not a double leader.
                match self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Wait until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return;
                }
                Ok(false) => tracing::debug!("another replica leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renew until leadership is lost; returns why.
    pub async fn hold(&self) -> LeaseLost {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    let holder = self
                        .api
                        .get_opt(&self.cfg.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec)
                        .and_then(|s| s.holder_identity);
                    return LeaseLost::TakenBy(holder.unwrap_or_else(|| "someone else".into()));
                }
                Err(e) if last_ok.elapsed() > self.cfg.renew_deadline => {
                    return LeaseLost::Deadline(self.cfg.renew_deadline, e.to_string())
                }
                Err(e) => tracing::warn!(error = %e, "renewing the Lease; will retry"),
            }
        }
    }

    /// Give the Lease up (on graceful shutdown) so a successor takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await {
            if let Some(spec) = lease
                .spec
                .as_mut()
                .filter(|s| s.holder_identity.as_deref() == Some(self.cfg.identity.as_str()))
            {
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                if let Err(e) = self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!(error = %e, "releasing the Lease");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_fresh_lease_of_another_holder_is_not_taken() {
        assert!(!can_take(&lease("a", 3), "b", Timestamp::now()));
    }

    #[test]
    fn an_expired_lease_or_our_own_is_taken() {
        assert!(can_take(&lease("a", 20), "b", Timestamp::now()));
        assert!(can_take(&lease("b", 3), "b", Timestamp::now()));
        assert!(can_take(&lease("", 3), "b", Timestamp::now()));
    }
}
