//! What every controller shares besides its reconcile skeleton (`reconciler`): Events,
//! the clock, and the one way status is written.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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

    /// One request as the scripted server saw it: method, path and JSON body.
    pub type Seen = (String, String, serde_json::Value);

    /// Answer every request with `answer(method, path, body)` (a status code and a JSON
    /// body) until every client is dropped; returns the requests in order.
    pub async fn serve_all(
        mut server: Server,
        answer: impl Fn(&str, &str, &serde_json::Value) -> (u16, serde_json::Value),
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Some((req, send)) = server.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_string());
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let (code, reply) = answer(&method, &path, &body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
                    .expect("response"),
            );
            seen.push((method, path, body));
        }
        seen
    }

    /// The API server's answer for an object that does not exist.
    pub fn not_found(what: &str) -> (u16, serde_json::Value) {
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{what} not found")});
        (404, status)
    }
}

/// Create `obj` unless it exists, under the operator's field manager; `Ok(false)` when
/// another writer made it first (409), which callers take as "someone else's is there".
pub async fn create_once<K>(api: &Api<K>, obj: &K) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where the operator works: every namespace (the default), or one namespace alone (a
/// namespaced install, like CloudNativePG's `clusterWide: false`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<String>);

impl Scope {
    /// Every namespace when `namespace` is empty, else that one alone.
    pub fn new(namespace: &str) -> Self {
        Scope(Some(namespace.trim().to_string()).filter(|n| !n.is_empty()))
    }

    /// Whether the operator watches every namespace.
    pub fn cluster_wide(&self) -> bool {
        self.0.is_none()
    }

    /// The API of a namespaced kind within this scope.
    pub fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        match &self.0 {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// The API of a namespaced dynamic kind within this scope.
    pub fn api_with(
        &self,
        client: &kube::Client,
        ar: &kube::api::ApiResource,
    ) -> Api<kube::api::DynamicObject> {
        match &self.0 {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn an_empty_namespace_is_every_namespace() {
        assert!(Scope::new("").cluster_wide());
        assert!(Scope::new("  ").cluster_wide());
        assert!(!Scope::new("team").cluster_wide());
        assert_eq!(Scope::new(" team "), Scope::new("team"));
    }
}
