//! The engine over HTTPS with a certificate the operator issues: clients that trust the
//! tenant's CA get through, anyone else (another tenant's CA, the public roots, plain
//! HTTP) does not, and a renewed certificate on disk is served without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use tenantdb_engine::cgroup::CgroupReader;
use tenantdb_engine::engine::{Engine, EngineOptions};
use tenantdb_engine::http::{router, EngineState};
use tenantdb_engine::tls::{server_config, CertResolver, TlsFiles, TlsListener};
use tenantdb_operator::tenant::tls::{new_ca, server_cert, Issued, Validity};

const NAME: &str = "acme-engine.shop.svc";

fn write(dir: &Path, cert: &Issued) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    files
}

/// An engine serving HTTPS with `files` on a loopback port.
async fn serve(data: &Path, files: TlsFiles) -> (SocketAddr, Arc<CertResolver>) {
    let engine = Engine::open(data, EngineOptions::default()).unwrap();
    let state = EngineState::new(
        Arc::new(engine),
        Default::default(),
        CgroupReader::new("/nonexistent", ""),
        "test".into(),
        Some("admin".into()),
    )
    .unwrap();
    let resolver = Arc::new(CertResolver::load(files).unwrap());
    let config = Arc::new(server_config(resolver.clone()).unwrap());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, router(Arc::new(state))).await });
    (addr, resolver)
}

/// A client that trusts `ca_pem` alone and finds the engine's Service name at `addr`.
fn client(addr: SocketAddr, ca_pem: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .resolve(NAME, addr);
    if let Some(ca) = ca_pem {
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// The DER of the certificate the engine presented, after a successful call.
async fn served(client: &reqwest::Client, addr: SocketAddr) -> Result<Vec<u8>, reqwest::Error> {
    let url = format!("https://{NAME}:{}/healthz", addr.port());
    let resp = client.get(url).send().await?.error_for_status()?;
    Ok(resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default())
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn only_clients_trusting_the_tenants_ca_get_through() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (data, certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Utc::now();
    let ca = new_ca("shop", "acme", now, Validity::default()).unwrap();
    let cert = server_cert("shop", "acme", &ca.key_pem, now, Validity::default()).unwrap();
    let (addr, _) = serve(data.path(), write(certs.path(), &cert)).await;

    let trusted = served(&client(addr, Some(&ca.cert_pem)), addr).await;
    assert_eq!(
        trusted.expect("a client trusting the CA"),
        der(&cert.cert_pem)
    );

    let stranger = new_ca("shop", "globex", now, Validity::default()).unwrap();
    let err = served(&client(addr, Some(&stranger.cert_pem)), addr)
        .await
        .expect_err("another tenant's CA must not vouch for this engine");
    assert!(err.is_connect(), "{err:?}");
    let err = served(&client(addr, None), addr)
        .await
        .expect_err("the public roots must not vouch for this engine");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP gets no HTTP answer: the bytes are not a TLS hello.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (data, certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = Utc::now();
    let ca = new_ca("shop", "acme", now, Validity::default()).unwrap();
    let first = server_cert("shop", "acme", &ca.key_pem, now, Validity::default()).unwrap();
    let files = write(certs.path(), &first);
    let (addr, resolver) = serve(data.path(), files.clone()).await;
    let c = client(addr, Some(&ca.cert_pem));
    assert_eq!(served(&c, addr).await.unwrap(), der(&first.cert_pem));
    assert!(!resolver.reload().unwrap(), "unchanged files are no change");

    let renewed = server_cert("shop", "acme", &ca.key_pem, now, Validity::default()).unwrap();
    write(certs.path(), &renewed);
    assert!(resolver.reload().unwrap());
    // A new connection (a fresh client: the old one may reuse its connection).
    let c = client(addr, Some(&ca.cert_pem));
    assert_eq!(served(&c, addr).await.unwrap(), der(&renewed.cert_pem));

    // A half-written pair (a key that is not one) is refused; the renewed one stays.
    std::fs::write(&files.key, "not a key").unwrap();
    assert!(resolver.reload().is_err());
    let c = client(addr, Some(&ca.cert_pem));
    assert_eq!(served(&c, addr).await.unwrap(), der(&renewed.cert_pem));
}

#[test]
fn an_unusable_pair_keeps_the_engine_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    assert!(CertResolver::load(files.clone()).is_err(), "missing files");
    std::fs::write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&files.key, "nope").unwrap();
    assert!(CertResolver::load(files).is_err(), "garbage");
}
