//! Pure: each tenant's own certificate authority and its engine's server certificate,
//! as CloudNativePG issues them per cluster. The CA's key stays in a Secret only the
//! operator reads; the engine mounts the server pair, and clients get the CA's
//! certificate with the connection details. No client here.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// Key of a certificate authority's certificate (PEM), in both Secrets and in every
/// connection Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the CA's private key, in the CA Secret only.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the engine's certificate chain in its TLS Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the engine's private key in its TLS Secret.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Annotation of the TLS Secret: when its certificate expires (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "tenantdb.io/not-after";
/// Annotation of the TLS Secret: from when the operator issues a new certificate.
pub const RENEW_AFTER_ANNOTATION: &str = "tenantdb.io/renew-after";
/// Annotation: which set of names ([`dns_names`]) the certificate was issued for; a
/// certificate of an older set is reissued (the `-rw` and `-ro` Services joined in 2).
pub const NAMES_ANNOTATION: &str = "tenantdb.io/names";
/// The set of names [`dns_names`] gives now.
pub const NAMES_VERSION: &str = "2";

/// How long certificates live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The CA's lifetime.
    pub ca: Duration,
    /// An engine certificate's lifetime; it is renewed after two thirds of it.
    pub server: Duration,
}

impl Default for Validity {
    /// Ten years for the CA, 90 days for engine certificates (renewed after 60).
    fn default() -> Self {
        Validity {
            ca: Duration::days(3650),
            server: Duration::days(90),
        }
    }
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters or the key.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// The CA Secret has no usable key (it is then made again, with a new CA).
    #[error("the CA Secret has no {0}")]
    Missing(&'static str),
    /// A time beyond what a certificate can say.
    #[error("certificate time out of range")]
    Time,
}

/// A certificate and its key, PEM, with its expiry and renewal time.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// When it expires.
    pub not_after: DateTime<Utc>,
    /// When the operator replaces it (two thirds of its life).
    pub renew_after: DateTime<Utc>,
}

fn offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| TlsError::Time)
}

/// The CA's parameters: the same every time, so the key alone re-creates the issuer.
fn ca_params(namespace: &str, tenant: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "TenantDB");
    dn.push(DnType::CommonName, format!("{namespace}/{tenant} CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A new certificate authority for `tenant` in `namespace`.
pub fn new_ca(
    namespace: &str,
    tenant: &str,
    now: DateTime<Utc>,
    validity: Validity,
) -> Result<Issued, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params(namespace, tenant)?;
    params.not_before = offset(now - Duration::minutes(5))?;
    let not_after = now + validity.ca;
    params.not_after = offset(not_after)?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
        renew_after: now + validity.ca * 2 / 3,
    })
}

/// The names a tenant's engine answers to: its Services by every form of cluster DNS,
/// and its pods through the headless Service.
pub fn dns_names(namespace: &str, tenant: &str) -> Vec<String> {
    let mut names = Vec::new();
    for service in [
        format!("{tenant}-engine"),
        format!("{tenant}-engine-headless"),
        format!("{tenant}-engine-rw"),
        format!("{tenant}-engine-ro"),
    ] {
        names.push(service.clone());
        for suffix in ["", ".svc", ".svc.cluster.local"] {
            names.push(format!("{service}.{namespace}{suffix}"));
        }
    }
    for suffix in [".svc", ".svc.cluster.local"] {
        names.push(format!("*.{tenant}-engine-headless.{namespace}{suffix}"));
    }
    names
}

/// A server certificate for `tenant`'s engine, signed by its CA's key `ca_key_pem`.
pub fn server_cert(
    namespace: &str,
    tenant: &str,
    ca_key_pem: &str,
    now: DateTime<Utc>,
    validity: Validity,
) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(namespace, tenant)?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names(namespace, tenant))?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{tenant}-engine.{namespace}.svc"),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = offset(now - Duration::minutes(5))?;
    let not_after = now + validity.server;
    params.not_after = offset(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
        renew_after: now + validity.server * 2 / 3,
    })
}

/// The value of `key` in `secret` as text.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Whether the engine's TLS Secret must be issued again at `now`: it lacks its pair or
/// its CA, was signed by another CA than `ca_cert_pem`, or is past its renewal time (or
/// does not say when that is).
pub fn needs_renewal(tls: &Secret, ca_cert_pem: &str, now: DateTime<Utc>) -> bool {
    let complete = [TLS_CERT_KEY, TLS_KEY_KEY]
        .iter()
        .all(|k| text(tls, k).is_some());
    let same_ca = text(tls, CA_CERT_KEY).as_deref() == Some(ca_cert_pem);
    let renew_after = tls
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RENEW_AFTER_ANNOTATION))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let names = tls
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NAMES_ANNOTATION))
        .is_some_and(|v| v == NAMES_VERSION);
    !complete || !same_ca || !names || renew_after.is_none_or(|t| now >= t)
}

/// The time a Secret's certificate is to be renewed, if it says.
pub fn renew_after(tls: &Secret) -> Option<DateTime<Utc>> {
    let t = tls
        .metadata
        .annotations
        .as_ref()?
        .get(RENEW_AFTER_ANNOTATION)?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A Secret of `type_` with string `data` and `annotations`, under `meta`.
pub fn secret(
    meta: serde_json::Value,
    type_: &str,
    data: BTreeMap<&str, &str>,
    annotations: BTreeMap<&str, String>,
) -> serde_json::Value {
    let mut meta = meta;
    meta["annotations"] = json!(annotations);
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_, "stringData": data})
}

/// The annotations recording an issued certificate's dates.
pub fn dates(issued: &Issued) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (NOT_AFTER_ANNOTATION, issued.not_after.to_rfc3339()),
        (RENEW_AFTER_ANNOTATION, issued.renew_after.to_rfc3339()),
        (NAMES_ANNOTATION, NAMES_VERSION.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use rustls::client::danger::ServerCertVerifier;

    fn tls_secret(ca: &str, server: &Issued, renew: Option<String>) -> Secret {
        let data = [
            (CA_CERT_KEY, ca),
            (TLS_CERT_KEY, server.cert_pem.as_str()),
            (TLS_KEY_KEY, server.key_pem.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let mut s = Secret {
            data: Some(data),
            ..Default::default()
        };
        s.metadata.annotations = renew.map(|r| {
            BTreeMap::from([
                (RENEW_AFTER_ANNOTATION.to_string(), r),
                (NAMES_ANNOTATION.to_string(), NAMES_VERSION.to_string()),
            ])
        });
        s
    }

    #[test]
    fn a_server_certificate_is_signed_by_the_tenants_ca_and_names_its_services() {
        let now = Utc::now();
        let ca = new_ca("shop", "acme", now, Validity::default()).unwrap();
        let server = server_cert("shop", "acme", &ca.key_pem, now, Validity::default()).unwrap();
        assert_eq!(server.not_after - now, Duration::days(90));
        assert_eq!(server.renew_after - now, Duration::days(60));
        // rustls, as a client trusting only this CA, accepts the chain for the Service name.
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        let ca_der =
            rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let cert =
            rustls::pki_types::CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.timestamp() as u64,
        ));
        for name in [
            "acme-engine.shop.svc",
            "acme-engine-0.acme-engine-headless.shop.svc.cluster.local",
        ] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&cert, &[], &name, &[], at)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("other-engine.shop.svc").unwrap();
        assert!(verifier
            .verify_server_cert(&cert, &[], &other, &[], at)
            .is_err());
        // Another tenant's CA does not vouch for it.
        let stranger = new_ca("shop", "other", now, Validity::default()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(stranger.cert_pem.as_bytes())
                    .unwrap(),
            )
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("acme-engine.shop.svc").unwrap();
        assert!(verifier
            .verify_server_cert(&cert, &[], &name, &[], at)
            .is_err());
    }

    #[test]
    fn renewal_is_due_after_its_time_or_when_anything_is_missing_or_from_another_ca() {
        let now = Utc::now();
        let ca = new_ca("shop", "acme", now, Validity::default()).unwrap();
        let server = server_cert("shop", "acme", &ca.key_pem, now, Validity::default()).unwrap();
        let later = (now + Duration::days(60)).to_rfc3339();
        let fresh = tls_secret(&ca.cert_pem, &server, Some(later.clone()));
        assert!(!needs_renewal(&fresh, &ca.cert_pem, now));
        assert!(needs_renewal(
            &fresh,
            &ca.cert_pem,
            now + Duration::days(61)
        ));
        assert!(needs_renewal(&fresh, "another CA", now));
        // A certificate issued for an older set of names (before -rw and -ro).
        let mut old_names = fresh.clone();
        if let Some(a) = old_names.metadata.annotations.as_mut() {
            a.insert(NAMES_ANNOTATION.to_string(), "1".into());
        }
        assert!(needs_renewal(&old_names, &ca.cert_pem, now));
        assert!(needs_renewal(
            &tls_secret(&ca.cert_pem, &server, None),
            &ca.cert_pem,
            now
        ));
        assert!(needs_renewal(&Secret::default(), &ca.cert_pem, now));
        assert!(needs_renewal(
            &tls_secret(&ca.cert_pem, &server, Some("soon".into())),
            &ca.cert_pem,
            now
        ));
    }

    #[test]
    fn a_ca_key_that_is_not_one_is_an_error() {
        assert!(server_cert("shop", "acme", "nope", Utc::now(), Validity::default()).is_err());
    }
}
