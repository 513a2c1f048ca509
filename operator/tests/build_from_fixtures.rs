//! The pure Tenant builders, driven from YAML fixtures: no client, no cluster.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tenantdb_crds::{Tenant, TenantPhase};
use tenantdb_engine_api::config::{EngineConfig, Priority};
use tenantdb_operator::tenant::build::{desired, BuildContext, BuildError, CONFIG_KEY};
use tenantdb_operator::tenant::status::{applied, engine_state, invalid, EngineState};
use tenantdb_operator::tiers::TierTable;

fn fixture(name: &str) -> Tenant {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ctx() -> BuildContext {
    BuildContext {
        member_image: "localhost/tenantdb-operator:test".into(),
        currency: "USD".into(),
        prices: Default::default(),
        certificates: Default::default(),
        tiers: TierTable::default(),
        engine_image: "localhost/tenantdb-engine:test".into(),
        image_pull_policy: "IfNotPresent".into(),
        operator_namespace: "tenantdb-system".into(),
        monitoring_peers: vec![],
        storage_class: None,
    }
}

fn engine_resources(sts: &StatefulSet) -> (Quantity, Quantity, Quantity, Quantity) {
    let c = &sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let r = c.resources.as_ref().unwrap();
    let (req, lim) = (r.requests.as_ref().unwrap(), r.limits.as_ref().unwrap());
    (
        req["cpu"].clone(),
        req["memory"].clone(),
        lim["cpu"].clone(),
        lim["memory"].clone(),
    )
}

#[test]
fn tier_gives_guaranteed_resources_and_overrides_apply() {
    let d = desired(&fixture("gold-with-overrides.yaml"), &ctx(), None).unwrap();
    let (req_cpu, req_mem, lim_cpu, lim_mem) = engine_resources(&d.stateful_set);
    assert_eq!(
        (req_cpu.0.as_str(), lim_cpu.0.as_str()),
        ("4", "4"),
        "gold CPU, requests = limits"
    );
    assert_eq!(
        (req_mem.0.as_str(), lim_mem.0.as_str()),
        ("6Gi", "6Gi"),
        "memory override"
    );
    let spec = d.stateful_set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let size = &claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(size.0, "250Gi", "PVC sized from the gold tier");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["disktype"], "ssd");
    assert_eq!(d.limits.iops, 12_000);
    assert_eq!(d.limits.connections, 250);
    let cfg =
        EngineConfig::from_yaml("cm", &d.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap();
    assert_eq!(cfg.limits.iops, Some(12_000));
    assert_eq!(cfg.limits.storage_bytes, Some(250 << 30));
    assert_eq!(cfg.priority, Some(Priority::High));
    let sla = cfg.sla.as_ref().unwrap();
    assert_eq!(
        (sla.uptime_percent, sla.max_avg_latency_ms),
        (99.9, 20.0),
        "gold's targets"
    );
    let billing = cfg.billing.as_ref().unwrap();
    assert_eq!(
        (billing.base_price_per_month, billing.currency.as_str()),
        (500.0, "USD")
    );
    for owner in [
        &d.stateful_set.metadata,
        &d.config_map.metadata,
        &d.service.metadata,
        &d.network_policy.metadata,
    ] {
        let refs = owner.owner_references.as_ref().unwrap();
        assert_eq!(
            (
                refs[0].kind.as_str(),
                refs[0].name.as_str(),
                refs[0].controller
            ),
            ("Tenant", "acme", Some(true))
        );
    }
}

#[test]
fn low_priorities_request_less_cpu_than_their_limit_so_the_kernel_weighs_them_less() {
    let mut t = fixture("gold-with-overrides.yaml");
    for (priority, want_request) in [
        ("critical", "4"),
        ("medium", "4"),
        ("low", "2000m"),
        ("bestEffort", "1000m"),
    ] {
        t.spec.priority = serde_json::from_value(serde_json::json!(priority)).unwrap();
        let d = desired(&t, &ctx(), None).unwrap();
        let (req_cpu, req_mem, lim_cpu, lim_mem) = engine_resources(&d.stateful_set);
        assert_eq!(req_cpu.0, want_request, "{priority}");
        assert_eq!(
            (lim_cpu.0.as_str(), &req_mem, &lim_mem),
            ("4", &lim_mem, &req_mem),
            "{priority}: limits and memory stay the tier's"
        );
        let cfg = EngineConfig::from_yaml("cm", &d.config_map.data.as_ref().unwrap()[CONFIG_KEY])
            .unwrap();
        assert_eq!(
            cfg.limits.cpu_millis,
            Some(4000),
            "{priority}: the engine sizes itself from the limit"
        );
    }
}

#[test]
fn deletion_policy_decides_whether_the_volume_goes() {
    let d = desired(&fixture("gold-with-overrides.yaml"), &ctx(), None).unwrap();
    let policy = d
        .stateful_set
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(
        (
            policy.when_deleted.as_deref(),
            policy.when_scaled.as_deref()
        ),
        (Some("Delete"), Some("Retain"))
    );
    let d = desired(&fixture("bronze-suspended.yaml"), &ctx(), None).unwrap();
    let policy = d
        .stateful_set
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(
        policy.when_deleted.as_deref(),
        Some("Retain"),
        "Retain is the default"
    );
}

#[test]
fn suspend_scales_to_zero_and_keeps_the_claim_template() {
    let d = desired(&fixture("bronze-suspended.yaml"), &ctx(), None).unwrap();
    let spec = d.stateful_set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(0));
    assert_eq!(spec.volume_claim_templates.as_ref().unwrap().len(), 1);
    let (_, _, cpu, mem) = engine_resources(&d.stateful_set);
    assert_eq!((cpu.0.as_str(), mem.0.as_str()), ("1", "2Gi"));
}

#[test]
fn a_tier_change_changes_the_pod_template() {
    let mut t = fixture("bronze-suspended.yaml");
    let before = desired(&t, &ctx(), None)
        .unwrap()
        .stateful_set
        .spec
        .unwrap()
        .template;
    t.spec.tier = tenantdb_crds::Tier::Silver;
    let after = desired(&t, &ctx(), None)
        .unwrap()
        .stateful_set
        .spec
        .unwrap()
        .template;
    assert_ne!(before, after, "a new template rolls the pod");
    let hash = |tpl: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["tenantdb.io/config-hash"]
            .clone()
    };
    assert_ne!(
        hash(&before),
        hash(&after),
        "the engine config changed with the tier"
    );
}

#[test]
fn an_existing_statefulset_keeps_its_claim_templates_and_the_claim_grows_instead() {
    let mut t = fixture("bronze-suspended.yaml");
    let first = desired(&t, &ctx(), None).unwrap();
    t.spec.tier = tenantdb_crds::Tier::Gold;
    let again = desired(&t, &ctx(), Some(&first.stateful_set)).unwrap();
    let claims = |d: &tenantdb_operator::tenant::build::Desired| {
        d.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .clone()
    };
    assert_eq!(
        claims(&again),
        claims(&first),
        "volume claim templates are immutable"
    );
    use tenantdb_operator::tenant::build::wanted_storage;
    assert_eq!(
        wanted_storage(&again.limits, "50Gi").as_deref(),
        Some("250Gi")
    );
    assert_eq!(wanted_storage(&again.limits, "250Gi"), None);
    assert_eq!(wanted_storage(&again.limits, "1Ti"), None, "never shrinks");
}

#[test]
fn an_invalid_quota_is_an_error_naming_the_field_and_an_invalid_status() {
    let t = fixture("bad-quota.yaml");
    let err = desired(&t, &ctx(), None).unwrap_err();
    assert!(matches!(err, BuildError::Limits(_)));
    assert!(err.to_string().starts_with("quota.cpu:"), "{err}");
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = invalid(&t, "InvalidLimits", &err.to_string(), &now);
    assert_eq!(status.phase, Some(TenantPhase::Invalid));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidLimits")
    );
}

#[test]
fn status_follows_the_statefulset() {
    let t = fixture("gold-with-overrides.yaml");
    let d = desired(&t, &ctx(), None).unwrap();
    let mut sts = d.stateful_set.clone();
    sts.metadata.generation = Some(1);
    assert_eq!(engine_state(Some(&sts), false), EngineState::NotReady);
    sts.status = serde_json::from_value(serde_json::json!({
        "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1,
        "currentRevision": "r1", "updateRevision": "r1"
    }))
    .unwrap();
    assert_eq!(engine_state(Some(&sts), false), EngineState::Ready);
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let s = applied(
        &t,
        d.limits.clone(),
        "http://e".into(),
        "creds".into(),
        EngineState::Ready,
        &now,
    );
    assert_eq!(s.phase, Some(TenantPhase::Ready));
    assert_eq!(s.observed_generation, Some(3));
    sts.status.as_mut().unwrap().update_revision = Some("r2".into());
    assert_eq!(engine_state(Some(&sts), false), EngineState::Rolling);
    let mut suspended = sts.clone();
    suspended.status =
        serde_json::from_value(serde_json::json!({"replicas": 0, "observedGeneration": 1}))
            .unwrap();
    assert_eq!(engine_state(Some(&suspended), true), EngineState::Suspended);
}

#[test]
fn every_lockdown_class_of_the_crd_is_one_the_engine_enforces() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(tenantdb_crds::LockdownProfile::crd()).unwrap();
    let values = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/disabledStatements/items/enum")
        .cloned()
        .expect("the CRD lists the statement classes");
    let all: Vec<String> = serde_json::from_value(values).unwrap();
    assert!(all.len() >= 20);
    let spec = serde_json::json!({"disabledStatements": all});
    let rules: tenantdb_engine_api::lockdown::LockdownRules =
        serde_json::from_value(spec).expect("the engine reads every class the CRD allows");
    assert_eq!(rules.disabled_statements.len(), all.len());
}

#[test]
fn backup_reaches_the_engine_config_and_its_credentials_come_from_the_secret() {
    let d = desired(&fixture("silver-with-backup.yaml"), &ctx(), None).unwrap();
    let text = d.config_map.data.as_ref().unwrap()[CONFIG_KEY].clone();
    let cfg: EngineConfig = serde_yaml::from_str(&text).unwrap();
    let b = cfg.backup.expect("backup in the engine config");
    assert_eq!(
        (
            b.store.endpoint.as_str(),
            b.store.bucket.as_str(),
            b.store.prefix.as_str()
        ),
        ("http://versitygw.backups:7070", "tenantdb", "prod")
    );
    assert_eq!(
        (
            b.retention_seconds,
            b.snapshot_interval_seconds,
            b.max_delay_millis
        ),
        (Some(3 * 86_400), Some(12 * 3600), Some(500))
    );
    assert!(
        b.store.access_key_id.is_none() && !text.contains("secretAccessKey:"),
        "no credentials in the ConfigMap"
    );
    let c = &d
        .stateful_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let env: Vec<(String, String, String)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect();
    assert!(
        env.contains(&(
            "TENANTDB_BACKUP_ACCESS_KEY_ID".into(),
            "backup-credentials".into(),
            "accessKeyId".into()
        )),
        "{env:?}"
    );
    assert!(
        env.contains(&(
            "TENANTDB_BACKUP_SECRET_ACCESS_KEY".into(),
            "backup-credentials".into(),
            "secretAccessKey".into()
        )),
        "{env:?}"
    );
    // Without backup, no backup settings and no such variables.
    let plain = desired(&fixture("bronze-suspended.yaml"), &ctx(), None).unwrap();
    assert!(!plain.config_map.data.as_ref().unwrap()[CONFIG_KEY].contains("backup"));
    // A bad duration is refused with the field named.
    let mut bad = fixture("silver-with-backup.yaml");
    bad.spec.backup.as_mut().unwrap().retention = "a week".into();
    let err = desired(&bad, &ctx(), None).unwrap_err();
    assert!(
        matches!(err, BuildError::Backup(ref m) if m.contains("retention")),
        "{err}"
    );
}

#[test]
fn only_the_operators_own_credentials_secret_is_trusted() {
    use tenantdb_operator::tenant::build::{credentials_secret, foreign_credentials};
    let t = fixture("silver-with-backup.yaml");
    let ours = credentials_secret(&t, "a-token").unwrap();
    // stringData becomes data on the server; the check reads data.
    let mut ours: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(serde_json::to_value(&ours).unwrap()).unwrap();
    let data = ours.string_data.take().unwrap_or_default();
    ours.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
            .collect(),
    );
    assert_eq!(foreign_credentials(&ours, &t), None);
    let keys: Vec<&String> = ours.data.as_ref().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["admin-token", "admin-tokens", "endpoint"],
        "the token, the engine's file of tokens, and no password nobody uses"
    );

    let mut planted = ours.clone();
    planted.metadata.labels = None;
    let why = foreign_credentials(&planted, &t).expect("a Secret without our labels");
    assert!(why.contains("not made by the operator"), "{why}");

    let mut empty = ours.clone();
    if let Some(d) = empty.data.as_mut() {
        d.insert("admin-token".into(), k8s_openapi::ByteString(Vec::new()));
    }
    let why = foreign_credentials(&empty, &t).expect("an empty token");
    assert!(why.contains("empty"), "{why}");
}

/// Issue 17: a misspelt key in a built object vanished silently when serde turned it
/// into its Kubernetes type. The builders now compare the typed object with what they
/// built; this is the comparison catching such a key.
#[test]
fn a_field_the_type_does_not_have_is_found_not_dropped() {
    use k8s_openapi::api::core::v1::Pod;
    use tenantdb_operator::tenant::build::dropped;
    let built = serde_json::json!({"spec": {"containers": [{"name": "e", "image": "i",
        "securityContext": {"runAsNonRoot": true, "runAsUsr": 10001}}]}});
    let pod: Pod = serde_json::from_value(built.clone()).expect("serde takes it silently");
    let back = serde_json::to_value(&pod).expect("json");
    assert_eq!(
        dropped(&built, &back, "").as_deref(),
        Some(".spec.containers[0].securityContext.runAsUsr")
    );
    let fixed = serde_json::json!({"spec": {"containers": [{"name": "e", "image": "i",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 10001}}]}});
    let pod: Pod = serde_json::from_value(fixed.clone()).expect("pod");
    let back = serde_json::to_value(&pod).expect("json");
    assert_eq!(dropped(&fixed, &back, ""), None);
}

/// Issue 16: the policy listed only Ingress, so an engine could reach anything (cloud
/// metadata included). Egress is DNS, and the backup store's port when backup is on.
#[test]
fn engines_reach_only_dns_and_their_backup_store_and_monitoring_peers_reach_them() {
    use tenantdb_operator::tenant::build::monitoring_peers;
    let json = |d: &tenantdb_operator::tenant::build::Desired| {
        serde_json::to_value(&d.network_policy.spec).expect("json")
    };
    let plain = json(&desired(&fixture("gold-with-overrides.yaml"), &ctx(), None).unwrap());
    assert_eq!(
        plain["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = plain["egress"].as_array().expect("egress rules");
    assert_eq!(egress.len(), 1, "DNS only without backup: {egress:?}");
    assert_eq!(egress[0]["ports"][0]["port"], 53);
    assert!(egress[0].get("to").is_none(), "DNS wherever it is served");

    let mut with_peers = ctx();
    with_peers.monitoring_peers =
        monitoring_peers(r#"[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]"#)
            .expect("peers");
    let backed = json(&desired(&fixture("silver-with-backup.yaml"), &with_peers, None).unwrap());
    let store = &backed["egress"][1];
    assert_eq!(store["ports"][0]["port"], 7070, "{backed}");
    assert_eq!(
        store["to"][1]["ipBlock"]["except"],
        serde_json::json!(["169.254.0.0/16"]),
        "never the metadata service"
    );
    let from = backed["ingress"][0]["from"].as_array().expect("from");
    assert_eq!(
        from.len(),
        3,
        "own namespace, operator, monitoring: {from:?}"
    );
    assert_eq!(
        from[2]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    let typo = monitoring_peers(r#"[{"namespaceSelectr": {}}]"#).expect_err("a typo");
    assert!(typo.contains("namespaceSelectr"), "{typo}");
    assert!(monitoring_peers("{}").is_err(), "an object, not an array");
}

#[test]
fn the_engine_serves_https_with_the_tls_secret_mounted_as_a_volume() {
    let t = fixture("gold-with-overrides.yaml");
    let d = desired(&t, &ctx(), None).unwrap();
    let pod = d.stateful_set.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap().join(" ");
    assert!(
        args.contains("--tls-cert /etc/tenantdb-tls/tls.crt --tls-key /etc/tenantdb-tls/tls.key"),
        "{args}"
    );
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let tls = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .expect("a tls volume");
    let secret = tls.secret.unwrap();
    let tenant = t.metadata.name.clone().unwrap();
    assert_eq!(secret.secret_name, Some(format!("{tenant}-engine-tls")));
    // Whole keys, never subPath: the kubelet updates a mounted Secret only then.
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "tls" && m.sub_path.is_none() && m.read_only == Some(true)));
    assert!(tenantdb_operator::tenant::build::endpoint(&tenant, "ns").starts_with("https://"));
}

#[test]
fn the_admin_tokens_reach_the_engine_as_a_file_it_rereads_not_as_an_environment_variable() {
    let t = fixture("gold-with-overrides.yaml");
    let d = desired(&t, &ctx(), None).unwrap();
    let pod = d.stateful_set.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let env = c.env.clone().unwrap_or_default();
    assert!(env.iter().all(|e| e.name != "TENANTDB_ADMIN_TOKEN"));
    let file = env
        .iter()
        .find(|e| e.name == "TENANTDB_ADMIN_TOKEN_FILE")
        .and_then(|e| e.value.clone());
    assert_eq!(
        file.as_deref(),
        Some("/etc/tenantdb-credentials/admin-tokens")
    );
    let vol = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "credentials")
        .expect("a credentials volume");
    let secret = vol.secret.unwrap();
    let tenant = t.metadata.name.clone().unwrap();
    assert_eq!(
        secret.secret_name,
        Some(format!("{tenant}-engine-credentials"))
    );
    let items: Vec<String> = secret.items.unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(items, ["admin-tokens"], "the accepted tokens alone");
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "credentials" && m.sub_path.is_none()));
}
