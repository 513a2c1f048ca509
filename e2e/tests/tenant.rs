//! The Tenant controller on a real cluster: samples become Ready with the tier's
//! cgroup limits, suspend/resume keeps the volume, a tier change rolls the pod,
//! deletion follows deletionPolicy, bad input is refused, and a killed operator
//! converges without duplicates. Needs TenantDB installed (`e2e/install.sh`).
#![cfg(feature = "e2e")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tenantdb_crds::{Tenant, TenantPhase};
use tenantdb_e2e::*;

const READY_WAIT: Duration = Duration::from_secs(180);

/// The e2e tier table (e2e/values-e2e.yaml): CPU cores and memory bytes per tier.
fn e2e_tier(tier: &str) -> (f64, u64) {
    match tier {
        "bronze" => (0.1, 96 << 20),
        "silver" => (0.15, 128 << 20),
        "gold" => (0.2, 160 << 20),
        "platinum" => (0.25, 192 << 20),
        other => panic!("unknown tier {other}"),
    }
}

fn tenant(name: &str, spec: serde_json::Value) -> anyhow::Result<Tenant> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec
    }))?)
}

fn phase(t: &Tenant) -> Option<TenantPhase> {
    t.status.as_ref().and_then(|s| s.phase)
}

fn condition(t: &Tenant, type_: &str) -> Option<(String, String)> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_phase(api: &Api<Tenant>, name: &str, want: TenantPhase) -> anyhow::Result<Tenant> {
    eventually(
        &format!("Tenant {name} phase {want:?}"),
        READY_WAIT,
        || async {
            let t = api.get(name).await?;
            Ok((phase(&t) == Some(want)
                && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation)
                .then_some(t))
        },
    )
    .await
}

async fn admin_token(client: &Client, ns: &str, tenant: &str) -> anyhow::Result<String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{tenant}-engine-credentials"))
        .await?;
    let data = s.data.unwrap_or_default();
    Ok(String::from_utf8(
        data.get("admin-token")
            .map(|b| b.0.clone())
            .unwrap_or_default(),
    )?)
}

async fn isolation(client: &Client, ns: &str, tenant: &str) -> anyhow::Result<(f64, u64)> {
    let svc = format!("{tenant}-engine");
    let cpu: serde_json::Value =
        serde_json::from_str(&service_get(client, ns, &svc, "/v1/isolation/cpu", None).await?)?;
    let mem: serde_json::Value =
        serde_json::from_str(&service_get(client, ns, &svc, "/v1/isolation/memory", None).await?)?;
    let cpus = cpu
        .pointer("/limit/cpus")
        .and_then(|v| v.as_f64())
        .unwrap_or(-1.0);
    let bytes = mem
        .pointer("/limit/limitBytes")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    Ok((cpus, bytes))
}

async fn instance_id(client: &Client, ns: &str, tenant: &str) -> anyhow::Result<String> {
    let token = admin_token(client, ns, tenant).await?;
    let body: serde_json::Value = serde_json::from_str(
        &service_get(
            client,
            ns,
            &format!("{tenant}-engine"),
            "/v1/status",
            Some(&token),
        )
        .await?,
    )?;
    Ok(body["instanceId"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn samples_become_ready_with_the_tier_limits_in_their_cgroups() -> anyhow::Result<()> {
    let client = client().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples");
    let ns = "tenantdb-samples";
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_yaml::from_str(&std::fs::read_to_string(dir.join("00-namespace.yaml"))?)?,
        )
        .await;
    let api: Api<Tenant> = Api::namespaced(client.clone(), ns);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tenant-"))
        {
            continue;
        }
        let t: Tenant = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        api.patch(
            &t.name_any(),
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&t),
        )
        .await?;
        names.push((
            t.name_any(),
            t.spec.tier.as_str().to_string(),
            t.spec.suspended,
        ));
    }
    assert_eq!(names.len(), 5, "one sample per tier and a suspended one");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (name, tier, suspended) in &names {
        if *suspended {
            wait_phase(&api, name, TenantPhase::Suspended).await?;
            continue;
        }
        let t = wait_phase(&api, name, TenantPhase::Ready).await?;
        assert_eq!(condition(&t, "Ready").map(|c| c.0), Some("True".into()));
        // Ready within 60 s of the engine container starting.
        let pod = pods.get(&format!("{name}-engine-0")).await?;
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone())
            .map(|t| t.0);
        let ready_at = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.last_transition_time.0);
        if let (Some(started), Some(ready_at)) = (started, ready_at) {
            let secs = ready_at.duration_since(started).as_secs_f64();
            println!("{name}: Ready {secs:.1}s after its engine container started");
            assert!(secs <= 60.0, "{name} took {secs}s from pod start to Ready");
        }
        let (want_cpu, want_mem) = e2e_tier(tier);
        let (cpus, mem) = isolation(&client, ns, name).await?;
        assert!(
            (cpus - want_cpu).abs() < 1e-6,
            "{name} ({tier}): cgroup CPU {cpus}, tier {want_cpu}"
        );
        assert_eq!(mem, want_mem, "{name} ({tier}): cgroup memory");
        let limits = t
            .status
            .as_ref()
            .and_then(|s| s.limits.clone())
            .expect("status.limits");
        assert!(limits.iops > 0 && !limits.storage.is_empty());
    }
    // kubectl get tnt shows the tier and the phase.
    let out = std::process::Command::new("kubectl")
        .args(["get", "tnt", "-n", ns])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("TIER") && h.contains("PHASE")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("sample-gold") && l.contains("gold") && l.contains("Ready")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("sample-suspended") && l.contains("Suspended")),
        "{table}"
    );
    Ok(())
}

#[tokio::test]
async fn suspend_resume_tier_change_and_delete() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-tenant").await?;
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &tenant(
            "life",
            serde_json::json!({"tier": "bronze", "deletionPolicy": "Delete"}),
        )?,
    )
    .await?;
    wait_phase(&api, "life", TenantPhase::Ready).await?;
    let id = instance_id(&client, &ns.name, "life").await?;
    assert_eq!(id.len(), 32);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let pvc_uid = pvcs.get("data-life-engine-0").await?.uid();

    // Suspend: scale to zero, keep the volume.
    api.patch(
        "life",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspended": true}})),
    )
    .await?;
    wait_phase(&api, "life", TenantPhase::Suspended).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("engine pod gone", READY_WAIT, || async {
        Ok(pods.get_opt("life-engine-0").await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(
        pvcs.get("data-life-engine-0").await?.uid(),
        pvc_uid,
        "the volume outlives the suspension"
    );

    // Resume: the same volume comes back.
    api.patch(
        "life",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspended": false}})),
    )
    .await?;
    wait_phase(&api, "life", TenantPhase::Ready).await?;
    assert_eq!(
        instance_id(&client, &ns.name, "life").await?,
        id,
        "same data volume after resume"
    );

    // Tier change: the pod rolls to the new limits.
    api.patch(
        "life",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"tier": "silver"}})),
    )
    .await?;
    let (cpus, mem) = eventually("engine on silver limits", READY_WAIT, || async {
        let l = isolation(&client, &ns.name, "life").await?;
        Ok((l.0 - 0.15).abs().lt(&1e-6).then_some(l))
    })
    .await?;
    assert_eq!((cpus, mem), (0.15, 128 << 20));
    wait_phase(&api, "life", TenantPhase::Ready).await?;
    assert_eq!(
        instance_id(&client, &ns.name, "life").await?,
        id,
        "same data volume after the tier change"
    );

    // Delete with deletionPolicy Delete: children and volume go.
    api.delete("life", &DeleteParams::default()).await?;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    eventually("children and volume deleted", READY_WAIT, || async {
        let gone = sts.get_opt("life-engine").await?.is_none()
            && cms.get_opt("life-engine-config").await?.is_none()
            && svcs.get_opt("life-engine").await?.is_none()
            && secrets.get_opt("life-engine-credentials").await?.is_none()
            && pvcs.get_opt("data-life-engine-0").await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn retain_keeps_the_volume_after_delete() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-retain").await?;
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &tenant("kept", serde_json::json!({"tier": "bronze"}))?,
    )
    .await?;
    wait_phase(&api, "kept", TenantPhase::Ready).await?;
    api.delete("kept", &DeleteParams::default()).await?;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    eventually("StatefulSet deleted", READY_WAIT, || async {
        Ok(sts.get_opt("kept-engine").await?.is_none().then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns.name)
        .get_opt("data-kept-engine-0")
        .await?;
    assert!(
        pvc.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
        "Retain (the default) keeps the volume"
    );
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn bad_input_is_refused_by_the_api_server_with_a_readable_message() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-bad").await?;
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<Tenant>(&()),
    );
    let cases = [
        (
            "unknown-tier",
            serde_json::json!({"tier": "diamond"}),
            "Unsupported value: \"diamond\"",
        ),
        (
            "negative-iops",
            serde_json::json!({"tier": "gold", "quota": {"iops": -5}}),
            "should be greater than or equal to 1",
        ),
        (
            "negative-cpu",
            serde_json::json!({"tier": "gold", "quota": {"cpu": "-1"}}),
            "quota.cpu must be a positive quantity",
        ),
        (
            "missing-tier",
            serde_json::json!({"priority": "high"}),
            "spec.tier: Required value",
        ),
        (
            &"x".repeat(64),
            serde_json::json!({"tier": "gold"}),
            "at most 45 characters",
        ),
        (
            "way-too-long-for-the-names-derived-from-it-tenant",
            serde_json::json!({"tier": "gold"}),
            "at most 45 characters",
        ),
        (
            "enforces-nothing",
            serde_json::json!({"tier": "gold", "enforceLockdownProfile": true}),
            "spec.enforceLockdownProfile needs spec.lockdownProfile",
        ),
    ];
    for (name, spec, want) in cases {
        let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec
        }))?;
        let err = raw
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(&format!("{name} must be refused"));
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "{name}: message {msg:?} should contain {want:?}"
        );
    }
    assert!(
        api.list(&ListParams::default()).await?.items.is_empty(),
        "nothing was created"
    );
    // A spec the schema accepts but the operator cannot serve becomes a condition, not a crash loop.
    // Here: a Secret named like the tenant's CA that the operator did not make, whose
    // key must not sign the engine's certificate.
    let squatter: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "squat-engine-ca"},
        "stringData": {"ca.crt": "x", "ca.key": "y"}
    }))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &squatter)
        .await?;
    api.create(
        &PostParams::default(),
        &tenant("squat", serde_json::json!({"tier": "bronze"}))?,
    )
    .await?;
    let t = wait_phase(&api, "squat", TenantPhase::Invalid).await?;
    assert_eq!(
        condition(&t, "Ready"),
        Some(("False".into(), "CASecretNotOurs".into()))
    );
    assert!(Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .get_opt("squat-engine")
        .await?
        .is_none());
    ns.delete(Duration::from_secs(120)).await
}

#[tokio::test]
async fn a_killed_operator_converges_without_duplicates() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-kill").await?;
    let api: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    let op_pods: Api<Pod> = Api::namespaced(client.clone(), "tenantdb-system");
    let kill_operator = || async {
        for p in op_pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=tenantdb-operator"))
            .await?
            .items
        {
            op_pods
                .delete(
                    &p.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await?;
        }
        anyhow::Ok(())
    };
    let names = ["k1", "k2", "k3"];
    for n in names {
        api.create(
            &PostParams::default(),
            &tenant(n, serde_json::json!({"tier": "bronze"}))?,
        )
        .await?;
    }
    // Mid-reconcile: the operator is working on the three new tenants right now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    kill_operator().await?;
    // Each tenant's Secrets (credentials, CA, engine certificate) by name.
    let secrets_of = |n: &'static str| {
        let api = Api::<Secret>::namespaced(client.clone(), &ns.name);
        async move {
            let lp = ListParams::default().labels(&format!("tenantdb.io/tenant={n}"));
            anyhow::Ok(
                api.list(&lp)
                    .await?
                    .items
                    .into_iter()
                    .map(|s| (s.name_any(), (s.uid(), s.data)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    };
    let mut secrets_before = BTreeMap::new();
    for n in names {
        wait_phase(&api, n, TenantPhase::Ready).await?;
        secrets_before.insert(n, secrets_of(n).await?);
    }
    println!(
        "three tenants Ready {:.1}s after the operator was killed",
        t0.elapsed().as_secs_f64()
    );
    // Kill it again once everything exists: nothing is recreated or regenerated.
    kill_operator().await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    for n in names {
        wait_phase(&api, n, TenantPhase::Ready).await?;
        let sel = format!("tenantdb.io/tenant={n}");
        let lp = ListParams::default().labels(&sel);
        assert_eq!(
            Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
                .list(&lp)
                .await?
                .items
                .len(),
            1,
            "{n}: one StatefulSet"
        );
        assert_eq!(
            Api::<Service>::namespaced(client.clone(), &ns.name)
                .list(&lp)
                .await?
                .items
                .len(),
            4,
            "{n}: four Services (engine, headless, -rw, -ro)"
        );
        assert_eq!(
            Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
                .list(&lp)
                .await?
                .items
                .len(),
            1,
            "{n}: one ConfigMap"
        );
        let secrets = secrets_of(n).await?;
        assert_eq!(
            secrets.keys().cloned().collect::<Vec<_>>(),
            [
                format!("{n}-engine-ca"),
                format!("{n}-engine-credentials"),
                format!("{n}-engine-tls")
            ],
            "{n}: one credentials Secret, one CA, one engine certificate"
        );
        assert_eq!(
            secrets, secrets_before[n],
            "{n}: credentials, CA and certificate never regenerated"
        );
        assert_eq!(
            Api::<Pod>::namespaced(client.clone(), &ns.name)
                .list(&lp)
                .await?
                .items
                .len(),
            1,
            "{n}: one engine pod"
        );
    }
    ns.delete(Duration::from_secs(120)).await
}
