//! The skeleton every controller's reconcile runs in. A controller writes its stages —
//! read, validate, build the desired objects, apply, write status — as functions of its
//! own (the pure ones apart); this module wraps each reconcile the same way for all three:
//! it is timed and counted, its error counted by label, a failure retried after a backoff
//! that grows per object and is forgotten on success, and the kube-rs `Controller` driven
//! until shutdown.

use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryFuture};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

/// A reconcile error's metric label (`kube`, `engine`, …).
pub trait ErrorLabel {
    /// The label.
    fn label(&self) -> &'static str;
}

/// Consecutive failures per object: 2 s, 4 s, 8 s … up to 5 minutes.
#[derive(Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    /// Count a failure of `key` and return how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let n = self
            .0
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        Duration::from_secs((1u64 << n.min(8)).min(300))
    }

    /// Forget the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.0.lock() {
            f.remove(key);
        }
    }
}

/// One controller's metrics and per-object backoff.
pub struct Bookkeeping {
    controller: &'static str,
    metrics: Metrics,
    backoff: Backoff,
}

impl Bookkeeping {
    /// Bookkeeping for the controller named `controller` (its metric label).
    pub fn new(controller: &'static str, metrics: Metrics) -> Self {
        Bookkeeping {
            controller,
            metrics,
            backoff: Backoff::default(),
        }
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Run one reconcile (`stages`) of the object `key`: time it, count it and its error,
    /// and forget the object's backoff when it succeeds.
    pub async fn observe<E: ErrorLabel>(
        &self,
        key: &str,
        stages: impl Future<Output = Result<Action, E>>,
    ) -> Result<Action, E> {
        let started = Instant::now();
        let result = stages.await;
        let label = result.as_ref().err().map(ErrorLabel::label);
        self.metrics
            .observe_reconcile(self.controller, started.elapsed(), label);
        if result.is_ok() {
            self.backoff.succeeded(key);
        }
        result
    }

    /// After a failed reconcile of `key`: log it and retry later, later each time.
    pub fn retry(&self, key: &str, error: &dyn Display) -> Action {
        let delay = self.backoff.failed(key);
        tracing::warn!(controller = self.controller, object = %key, %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object: how logs and backoff name it.
pub fn key<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Run `controller` with `reconcile` and `error_policy` until its graceful shutdown,
/// logging what the runtime reports besides reconciles (watch errors, queue events).
pub async fn drive<K, Ctx, Fut>(
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    error_policy: impl Fn(Arc<K>, &Fut::Error, Arc<Ctx>) -> Action,
    ctx: Arc<Ctx>,
) where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Eq + Hash + Clone + Unpin,
    Fut: TryFuture<Ok = Action> + Send + 'static,
    Fut::Error: std::error::Error + Send + 'static,
{
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failed;
    impl ErrorLabel for Failed {
        fn label(&self) -> &'static str {
            "kube"
        }
    }

    #[tokio::test]
    async fn failures_back_off_per_object_and_a_success_resets_them() {
        let m = Metrics::new().expect("metrics");
        let book = Bookkeeping::new("tenant", m.clone());
        let fail = || async { Err::<Action, _>(Failed) };
        assert!(book.observe("ns/a", fail()).await.is_err());
        assert_eq!(
            book.retry("ns/a", &"x"),
            Action::requeue(Duration::from_secs(2))
        );
        assert!(book.observe("ns/a", fail()).await.is_err());
        assert_eq!(
            book.retry("ns/a", &"x"),
            Action::requeue(Duration::from_secs(4))
        );
        assert_eq!(
            book.retry("ns/b", &"x"),
            Action::requeue(Duration::from_secs(2)),
            "another object has its own count"
        );
        let ok = book
            .observe("ns/a", async { Ok::<_, Failed>(Action::await_change()) })
            .await;
        assert!(ok.is_ok());
        assert_eq!(
            book.retry("ns/a", &"x"),
            Action::requeue(Duration::from_secs(2)),
            "a success forgets the failures"
        );
        let text = m.render(None);
        assert!(
            text.contains(r#"tenantdb_operator_reconciles_total{controller="tenant"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tenantdb_operator_reconcile_errors_total{controller="tenant",error="kube"} 2"#
            ),
            "{text}"
        );
    }
}
