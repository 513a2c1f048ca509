//! TLS on the real cluster: every tenant gets its own CA and an engine certificate for
//! its Service; the engine serves only that, a client trusting another tenant's CA is
//! refused, and a certificate past its renewal time is replaced in the running pod
//! without a restart. (Drivers over HTTPS: `drivers.rs`; the plugin: `plugin/tests`.)
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tenantdb_e2e::pdb::open_database;
use tenantdb_e2e::*;

fn key(secret: &Secret, k: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(k))
        .map(|v| v.0.clone())
        .unwrap_or_default()
}

fn der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(rustls::pki_types::CertificateDer::from_pem_slice(pem)?.to_vec())
}

#[tokio::test]
async fn engines_serve_their_tenants_certificate_and_renew_it_without_a_restart(
) -> anyhow::Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "e2e-tls").await?;
    let n = ns.name.as_str();
    ready_tenant(&c, n, "vault", "bronze").await?;
    ready_tenant(&c, n, "other", "bronze").await?;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), n);
    let tls = secrets.get("vault-engine-tls").await?;
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = key(&tls, "ca.crt");
    let ca_secret = secrets.get("vault-engine-ca").await?;
    assert_eq!(
        key(&ca_secret, "ca.crt"),
        ca,
        "the engine's Secret carries its CA"
    );
    assert!(
        key(&tls, "ca.key").is_empty(),
        "the CA's key stays in the operator's Secret"
    );
    let other_ca = key(&secrets.get("other-engine-tls").await?, "ca.crt");
    assert_ne!(ca, other_ca, "each tenant has its own CA");

    let service = format!("vault-engine.{n}.svc");
    let first = served_certificate(&c, n, "vault-engine-0", &service, &ca).await?;
    assert_eq!(first, der(&key(&tls, "tls.crt"))?);
    let wrong = served_certificate(&c, n, "vault-engine-0", &service, &other_ca).await;
    assert!(
        wrong.is_err(),
        "a client trusting another tenant's CA must refuse the engine"
    );
    let wrong_name = served_certificate(
        &c,
        n,
        "vault-engine-0",
        &format!("other-engine.{n}.svc"),
        &ca,
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "the certificate names the tenant's own Service only"
    );

    // Renewal: the operator replaces a certificate past its renewal time; here the time
    // is moved instead of waiting 60 days.
    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    let before = pods.get("vault-engine-0").await?;
    let past =
        json!({"metadata": {"annotations": {"tenantdb.io/renew-after": "2000-01-01T00:00:00Z"}}});
    secrets
        .patch(
            "vault-engine-tls",
            &PatchParams::default(),
            &Patch::Merge(&past),
        )
        .await?;
    let renewed = eventually(
        "the operator renews the certificate",
        Duration::from_secs(60),
        || async {
            let s = secrets.get("vault-engine-tls").await?;
            let cert = der(&key(&s, "tls.crt"))?;
            Ok((cert != first).then_some(cert))
        },
    )
    .await?;
    let started = tokio::time::Instant::now();
    eventually(
        "the engine serves the renewed certificate",
        Duration::from_secs(240),
        || async {
            let served = served_certificate(&c, n, "vault-engine-0", &service, &ca).await?;
            Ok((served == renewed).then_some(()))
        },
    )
    .await?;
    println!(
        "renewed certificate served {:.0} s after it was issued",
        started.elapsed().as_secs_f64()
    );
    let after = pods.get("vault-engine-0").await?;
    assert_same_pod(&before, &after);
    // And the operator still drives it, over TLS under the same CA.
    open_database(&c, n, "ledger", json!({"tenant": "vault"})).await?;
    ns.delete(Duration::from_secs(120)).await
}
