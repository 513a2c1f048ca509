//! The part of the Tenant controller that keeps each tenant's CA and engine certificate
//! in their Secrets: the CA is made once; the engine's certificate is issued when it is
//! missing, from another CA, or past its renewal time. The kubelet brings a renewed one
//! into the running pod and the engine reloads it, so renewal restarts nothing.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use tenantdb_crds::Tenant;

use super::build::{self, BuildError};
use super::controller::{apply, kube_err, Error};
use super::tls::{self, Validity};

fn issue_err(e: tls::TlsError) -> Error {
    Error::Build(BuildError::Tls(e.to_string()))
}

/// Make sure `tenant` has its CA and a current engine certificate, and say when that
/// certificate is to be renewed; `Err((reason, message))` inside when a Secret of those
/// names exists and is not the operator's (or the CA's lacks a key).
pub async fn ensure(
    client: &Client,
    tenant: &Tenant,
    ns: &str,
    validity: Validity,
) -> Result<Result<DateTime<Utc>, (&'static str, String)>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = tenant.name_any();
    let names = build::names(&name);
    let now = Utc::now();
    let ca = match secrets
        .get_opt(&names.ca)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{}", names.ca)))?
    {
        Some(existing) => {
            if let Some(why) = build::foreign_secret(&existing, tenant) {
                return Ok(Err(("CASecretNotOurs", why)));
            }
            match (
                tls::text(&existing, tls::CA_CERT_KEY),
                tls::text(&existing, tls::CA_KEY_KEY),
            ) {
                (Some(cert), Some(key)) => (cert, key),
                _ => {
                    return Ok(Err((
                        "CASecretIncomplete",
                        format!(
                            "Secret {ns}/{} lacks {} or {}; delete it and the operator makes a new CA (clients must then trust the new one)",
                            names.ca,
                            tls::CA_CERT_KEY,
                            tls::CA_KEY_KEY
                        ),
                    )))
                }
            }
        }
        None => {
            let issued = tls::new_ca(ns, &name, now, validity).map_err(issue_err)?;
            let secret = secret(
                tenant,
                &names.ca,
                "Opaque",
                BTreeMap::from([
                    (tls::CA_CERT_KEY, issued.cert_pem.as_str()),
                    (tls::CA_KEY_KEY, issued.key_pem.as_str()),
                ]),
                BTreeMap::from([(tls::NOT_AFTER_ANNOTATION, issued.not_after.to_rfc3339())]),
            )?;
            let created = crate::runtime::create_once(&secrets, &secret)
                .await
                .map_err(kube_err(format!("creating Secret {ns}/{}", names.ca)))?;
            if !created {
                // Another reconcile made it first: use theirs next time round.
                return Err(Error::Build(BuildError::Tls(format!(
                    "Secret {ns}/{} was created meanwhile; retrying",
                    names.ca
                ))));
            }
            (issued.cert_pem, issued.key_pem)
        }
    };
    let (ca_cert, ca_key) = ca;
    let current = secrets
        .get_opt(&names.tls)
        .await
        .map_err(kube_err(format!("reading Secret {ns}/{}", names.tls)))?;
    if let Some(existing) = &current {
        if let Some(why) = build::foreign_secret(existing, tenant) {
            return Ok(Err(("TLSSecretNotOurs", why)));
        }
        if !tls::needs_renewal(existing, &ca_cert, now) {
            return Ok(Ok(tls::renew_after(existing).unwrap_or(now)));
        }
    }
    let issued = tls::server_cert(ns, &name, &ca_key, now, validity).map_err(issue_err)?;
    let secret = secret(
        tenant,
        &names.tls,
        "kubernetes.io/tls",
        BTreeMap::from([
            (tls::TLS_CERT_KEY, issued.cert_pem.as_str()),
            (tls::TLS_KEY_KEY, issued.key_pem.as_str()),
            (tls::CA_CERT_KEY, ca_cert.as_str()),
        ]),
        tls::dates(&issued),
    )?;
    apply(client, ns, &secret).await?;
    tracing::info!(tenant = %format!("{ns}/{name}"), not_after = %issued.not_after, renewed = current.is_some(), "engine certificate issued");
    Ok(Ok(issued.renew_after))
}

fn secret(
    tenant: &Tenant,
    name: &str,
    type_: &str,
    data: BTreeMap<&str, &str>,
    annotations: BTreeMap<&str, String>,
) -> Result<Secret, Error> {
    let meta = build::child_meta(tenant, name)?;
    Ok(build::typed(
        "Secret",
        tls::secret(meta, type_, data, annotations),
    )?)
}
