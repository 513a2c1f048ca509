//! What every controller shares: per-object exponential backoff, Events, the clock, and
//! the one way status is written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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

/// Publish an Event about `object`; a failure to publish is logged, never fatal.
pub async fn publish(
    recorder: &Recorder,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, object).await {
        tracing::warn!(error = %e, "publishing event");
    }
}

/// The current time as Kubernetes writes it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Write `status` as the whole status of object `name` by server-side apply under the
/// operator's field manager (forced). A field this operator wrote before and leaves out
/// now is removed by the API server; the merge patches used before could only add, so a
/// status never lost a field (a Tenant kept its old limits and endpoint after its spec
/// became unreadable). Every controller writes status through this.
pub async fn apply_status<K>(
    api: &Api<K>,
    api_version: &str,
    kind: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let body =
        status_apply_body(api_version, kind, name, status).map_err(kube::Error::SerdeError)?;
    api.patch_status(
        name,
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
}

/// The apply configuration of a status: the object's identity and its status with every
/// null left out (a field named with null would still be claimed by the operator; left
/// out, it is released and removed).
pub fn status_apply_body(
    api_version: &str,
    kind: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<Value, serde_json::Error> {
    let mut status = serde_json::to_value(status)?;
    drop_nulls(&mut status);
    Ok(serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name},
        "status": status,
    }))
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// A client whose API server is a script: each request is handed to the test, which
/// checks it and answers (kube-rs `controller-rs` tests reconcilers this way).
#[cfg(test)]
pub mod mock {
    use http::{Request, Response};
    use kube::client::Body;

    /// The test's end: the next request and a way to answer it.
    pub type Server = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// A client talking to a scripted server.
    pub fn client() -> (kube::Client, Server) {
        let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), server)
    }

    /// The next request: method, path, query, content type and JSON body; answered
    /// with `reply`.
    pub async fn next(
        server: &mut Server,
        reply: serde_json::Value,
    ) -> (String, String, String, String, serde_json::Value) {
        let (req, send) = server.next_request().await.expect("a request");
        let (method, uri) = (req.method().to_string(), req.uri().clone());
        let ctype = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = req.into_body().collect_bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let answer = serde_json::to_vec(&reply).expect("reply");
        send.send_response(
            Response::builder()
                .body(Body::from(answer))
                .expect("response"),
        );
        (
            method,
            uri.path().to_string(),
            uri.query().unwrap_or_default().to_string(),
            ctype,
            body,
        )
    }
}
