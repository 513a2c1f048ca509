//! The member agent's loop: every half second read the engine and the Lease, do what
//! [`plan::decide`] says, label the pod, and publish the engine's replication status in
//! a pod annotation for the operator. On SIGTERM a primary fences its engine and
//! releases the Lease, so a standby takes over without waiting for it to expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tenantdb_engine_api::replication::{monotonic_millis, ReplicationStatus, Role, RoleRequest};

use super::plan::{self, Action, EngineView, LeaseView};
use crate::tenant::build::{lease_name, names, ROLE_LABEL};

/// Annotation on the Lease: the member that held it last.
pub const LAST_PRIMARY_ANNOTATION: &str = "tenantdb.io/last-primary";
/// Annotation on the Lease: a switchover to this member was asked for.
pub const HANDOVER_ANNOTATION: &str = "tenantdb.io/handover-to";
/// Annotation on each member pod: its engine's replication status (JSON).
pub const STATUS_ANNOTATION: &str = "tenantdb.io/replication";
/// How long the Lease is valid after a renewal.
pub const LEASE_SECONDS: i32 = 5;
/// How long an engine may acknowledge after the renewal that allowed it began: 2 s
/// short of the Lease, so it stops before any other member may take over.
pub const ACKNOWLEDGE_MILLIS: u64 = 3_000;
/// How often the agent looks.
pub const TICK: Duration = Duration::from_millis(500);

/// Who this agent is and where its engine is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its pod.
    pub pod: String,
    /// The tenant's namespace.
    pub namespace: String,
    /// The tenant.
    pub tenant: String,
    /// The engine's port.
    pub port: u16,
    /// The admin token file (the first token is used).
    pub token_file: std::path::PathBuf,
    /// The tenant's CA.
    pub ca_file: std::path::PathBuf,
}

impl Config {
    fn host_of(&self, pod: &str) -> String {
        format!(
            "{pod}.{}.{}.svc",
            names(&self.tenant).headless,
            self.namespace
        )
    }

    /// The engine URL of member `pod`.
    pub fn url_of(&self, pod: &str) -> String {
        format!("https://{}:{}", self.host_of(pod), self.port)
    }

    fn first(&self) -> bool {
        self.pod == format!("{}-0", names(&self.tenant).engine)
    }
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The CA or token file.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// The HTTP client.
    #[error("engine client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The agent.
pub struct Agent {
    cfg: Config,
    http: reqwest::Client,
    leases: Api<Lease>,
    pods: Api<Pod>,
    observed: Option<(String, Instant)>,
    labelled: Option<&'static str>,
    published: Option<(String, Instant)>,
    /// The admin token, read from its file once a tick (it rotates).
    token: String,
}

impl Agent {
    /// An agent for `cfg`, reaching the API server with `client`.
    pub fn new(cfg: Config, client: kube::Client) -> Result<Self, AgentError> {
        let ca = std::fs::read(&cfg.ca_file)
            .map_err(|e| AgentError::Read(cfg.ca_file.display().to_string(), e))?;
        let own = cfg.host_of(&cfg.pod);
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .https_only(true)
            .resolve(&own, std::net::SocketAddr::from(([127, 0, 0, 1], cfg.port)))
            .connect_timeout(Duration::from_millis(1500))
            .build()?;
        Ok(Agent {
            leases: Api::namespaced(client.clone(), &cfg.namespace),
            pods: Api::namespaced(client, &cfg.namespace),
            cfg,
            http,
            observed: None,
            labelled: None,
            published: None,
            token: String::new(),
        })
    }

    fn read_token(&self) -> String {
        std::fs::read_to_string(&self.cfg.token_file)
            .ok()
            .and_then(|t| {
                t.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(String::from)
            })
            .unwrap_or_default()
    }

    async fn engine(&self) -> (EngineView, Option<ReplicationStatus>) {
        let url = format!("{}/v1/admin/replication", self.cfg.url_of(&self.cfg.pod));
        let sent = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_millis(1500))
            .send()
            .await;
        let status = match sent {
            Ok(r) if r.status().is_success() => r.json::<ReplicationStatus>().await.ok(),
            Ok(_) => None,
            Err(e) => {
                let gone = e.is_connect() && !e.is_timeout();
                return (
                    EngineView {
                        gone,
                        ..Default::default()
                    },
                    None,
                );
            }
        };
        let view = status
            .as_ref()
            .map_or_else(EngineView::default, |s| EngineView {
                reachable: true,
                gone: false,
                role: s.role,
                epoch: s.epoch,
                caught_up: s.caught_up,
            });
        (view, status)
    }

    async fn push(&self, req: &RoleRequest, timeout: Duration) -> Result<(), String> {
        let url = format!("{}/v1/admin/role", self.cfg.url_of(&self.cfg.pod));
        let r = self
            .http
            .put(url)
            .bearer_auth(&self.token)
            .json(req)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ))
        }
    }

    async fn primary(&self, epoch: u64, began: u64, valid_ms: u64) -> Result<(), String> {
        let req = RoleRequest {
            role: Role::Primary,
            epoch,
            valid_for_millis: Some(valid_ms.max(1)),
            valid_until_monotonic_millis: Some(began + valid_ms),
            primary_url: None,
        };
        // A promotion opens every database: give it time.
        self.push(&req, Duration::from_secs(20)).await
    }

    async fn lease(&mut self) -> Result<Lease, kube::Error> {
        let name = lease_name(&self.cfg.tenant);
        let lease = match self.leases.get_opt(&name).await? {
            Some(l) => l,
            None => {
                let fresh = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_duration_seconds: Some(LEASE_SECONDS),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.leases.create(&PostParams::default(), &fresh).await {
                    Ok(l) => l,
                    Err(kube::Error::Api(s)) if s.code == 409 => self.leases.get(&name).await?,
                    Err(e) => return Err(e),
                }
            }
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(v, _)| *v != version) {
            self.observed = Some((version, Instant::now()));
        }
        Ok(lease)
    }

    fn view(&self, lease: &Lease) -> LeaseView {
        let spec = lease.spec.clone().unwrap_or_default();
        let duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1) as u64);
        LeaseView {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            epoch: spec.lease_transitions.unwrap_or(0).max(0) as u64,
            last_primary: lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LAST_PRIMARY_ANNOTATION).cloned()),
            handover_to: lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(HANDOVER_ANNOTATION).cloned())
                .filter(|to| !to.is_empty()),
            expired: self
                .observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() >= duration),
        }
    }

    /// Write `lease` with this member holding it (or, with `release`, nobody); the
    /// resourceVersion it carries makes a concurrent writer's change a conflict.
    async fn write_lease(
        &self,
        mut lease: Lease,
        hold: bool,
        new_epoch: bool,
    ) -> Result<Lease, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        if new_epoch {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        if hold {
            spec.holder_identity = Some(self.cfg.pod.clone());
            spec.renew_time = Some(now);
        } else {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(LAST_PRIMARY_ANNOTATION.into(), self.cfg.pod.clone());
        if new_epoch {
            // The switchover asked for is done once its member holds the Lease.
            annotations.remove(HANDOVER_ANNOTATION);
        }
        self.leases
            .replace(
                &lease_name(&self.cfg.tenant),
                &PostParams::default(),
                &lease,
            )
            .await
    }

    async fn label(&mut self, pod: &str, role: &'static str) {
        let patch = json!({"metadata": {"labels": {ROLE_LABEL: role}}});
        match self
            .pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) if pod == self.cfg.pod => self.labelled = Some(role),
            Ok(_) => {}
            Err(e) => tracing::warn!(%pod, error = %e, "labelling the member"),
        }
    }

    async fn label_self(&mut self, role: &'static str) {
        if self.labelled != Some(role) {
            let pod = self.cfg.pod.clone();
            self.label(&pod, role).await;
        }
    }

    async fn publish(&mut self, status: Option<&ReplicationStatus>) {
        let Some(status) = status else { return };
        let mut text = serde_json::to_value(status).unwrap_or_default();
        if let Some(o) = text.as_object_mut() {
            o.remove("files");
        }
        let text = text.to_string();
        let fresh = self
            .published
            .as_ref()
            .is_some_and(|(t, at)| *t == text || at.elapsed() < Duration::from_secs(2));
        if fresh {
            return;
        }
        let patch = json!({"metadata": {"annotations": {STATUS_ANNOTATION: text}}});
        if self
            .pods
            .patch(
                &self.cfg.pod,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .is_ok()
        {
            self.published = Some((text, Instant::now()));
        }
    }

    /// One tick.
    pub async fn tick(&mut self) {
        let began = monotonic_millis();
        self.token = self.read_token();
        let (engine, status) = self.engine().await;
        let lease = match self.lease().await {
            Ok(l) => l,
            Err(e) => {
                // Nothing is renewed: a primary's engine stops acknowledging by itself.
                tracing::warn!(error = %e, "reading the Lease");
                return;
            }
        };
        let view = self.view(&lease);
        let action = plan::decide(&self.cfg.pod, self.cfg.first(), &view, &engine);
        tracing::debug!(?view, ?engine, ?action, "tick");
        match action {
            Action::Renew => {
                if self.write_lease(lease, true, false).await.is_ok() {
                    if let Err(e) = self.primary(view.epoch, began, ACKNOWLEDGE_MILLIS).await {
                        tracing::warn!(error = %e, "extending the engine's primary role");
                    }
                    self.label_self("primary").await;
                }
            }
            Action::Acquire => match self.write_lease(lease, true, true).await {
                Ok(taken) => {
                    let epoch = taken.spec.and_then(|s| s.lease_transitions).unwrap_or(0) as u64;
                    tracing::info!(epoch, "took the primary Lease; promoting the engine");
                    for i in 0..3 {
                        let other = format!("{}-{i}", names(&self.cfg.tenant).engine);
                        if other != self.cfg.pod {
                            self.label(&other, "standby").await;
                        }
                    }
                    match self.primary(epoch, began, ACKNOWLEDGE_MILLIS).await {
                        Ok(()) => self.label_self("primary").await,
                        Err(e) => {
                            tracing::error!(error = %e, "the engine refused promotion; releasing the Lease");
                            if let Ok(l) = self.lease().await {
                                let _ = self.write_lease(l, false, false).await;
                            }
                        }
                    }
                }
                Err(e) => tracing::info!(error = %e, "another member took the Lease first"),
            },
            Action::Release => {
                tracing::warn!(
                    ?engine,
                    "this member's engine cannot be primary now: releasing the Lease"
                );
                self.label_self("standby").await;
                if let Err(e) = self.write_lease(lease, false, false).await {
                    tracing::warn!(error = %e, "releasing the Lease");
                }
            }
            Action::HandOver => {
                tracing::info!(to = ?view.handover_to, "switchover: handing the primary role over");
                let _ = self.primary(view.epoch, monotonic_millis(), 1).await;
                // The last commits (acknowledged or refused) reach the standbys first.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    match self.engine().await.1 {
                        Some(s) if s.lag_transactions == 0 => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                self.label_self("standby").await;
                if let Ok(l) = self.lease().await {
                    if let Err(e) = self.write_lease(l, false, false).await {
                        tracing::warn!(error = %e, "handing the Lease over");
                    }
                }
            }
            Action::Follow(holder) => {
                self.label_self("standby").await;
                let req = RoleRequest {
                    role: Role::Standby,
                    epoch: view.epoch,
                    valid_for_millis: None,
                    valid_until_monotonic_millis: None,
                    primary_url: Some(self.cfg.url_of(&holder)),
                };
                if engine.reachable {
                    if let Err(e) = self.push(&req, Duration::from_secs(5)).await {
                        tracing::warn!(error = %e, "telling the engine whom to follow");
                    }
                }
            }
            Action::Wait => {}
        }
        self.publish(status.as_ref()).await;
    }

    /// Leaving (SIGTERM): a primary stops its engine acknowledging, then releases the
    /// Lease so that a standby takes over at once.
    pub async fn step_down(&mut self) {
        self.token = self.read_token();
        let Ok(lease) = self.lease().await else {
            return;
        };
        let view = self.view(&lease);
        if view.holder.as_deref() != Some(self.cfg.pod.as_str()) {
            return;
        }
        let _ = self.primary(view.epoch, monotonic_millis(), 1).await;
        match self.write_lease(lease, false, false).await {
            Ok(_) => tracing::info!("stepped down: the Lease is free for a standby"),
            Err(e) => tracing::warn!(error = %e, "releasing the Lease on the way out"),
        }
    }
}

/// Run the agent until SIGTERM.
pub async fn run(mut agent: Agent) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        agent.tick().await;
        let stop = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stop => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    agent.step_down().await;
}
