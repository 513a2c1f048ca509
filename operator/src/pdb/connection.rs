//! Pure: a PluggableDatabase's connection details, the Secret an application mounts
//! (as CloudNativePG's `<cluster>-app`): the database's Hrana URL by in-cluster Service
//! DNS, as the libSQL drivers take it, and a token scoped to that database alone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use tenantdb_crds::PluggableDatabase;

use crate::tenant::build::endpoint;

/// Key of the HTTP URL (ends in `/`: the drivers resolve `v2/pipeline` relative to it).
pub const URL_KEY: &str = "LIBSQL_URL";
/// Key of the WebSocket URL.
pub const WS_URL_KEY: &str = "LIBSQL_WS_URL";
/// Key of the token.
pub const TOKEN_KEY: &str = "LIBSQL_AUTH_TOKEN";
/// Key of the tenant's CA certificate (PEM), which alone vouches for the engine: mount
/// it and point the driver's runtime at it (`NODE_EXTRA_CA_CERTS`, `SSL_CERT_FILE`).
pub const CA_KEY: &str = crate::tenant::tls::CA_CERT_KEY;
/// Annotation holding the engine's id of the token, to check and revoke it.
pub const TOKEN_ID_ANNOTATION: &str = "tenantdb.io/token-id";
/// Annotation: when the token expires (RFC 3339), with `spec.tokenLifetime`.
pub const TOKEN_EXPIRES_ANNOTATION: &str = "tenantdb.io/token-expires-at";
/// Annotation: from when the operator writes a new token (two thirds of its life).
pub const TOKEN_RENEW_ANNOTATION: &str = "tenantdb.io/token-renew-after";
/// Annotation: the `spec.tokenLifetime` the token was issued for, to notice a change.
pub const TOKEN_LIFETIME_ANNOTATION: &str = "tenantdb.io/token-lifetime";
/// Label naming the tenant whose engine issued the token.
pub const TENANT_LABEL: &str = "tenantdb.io/tenant";
/// Label naming the database.
pub const DATABASE_LABEL: &str = "tenantdb.io/database";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tenantdb-operator");

/// Name of the connection Secret of PluggableDatabase `pdb`.
pub fn secret_name(pdb: &str) -> String {
    format!("{pdb}-connection")
}

/// The HTTP URL of database `db` in `tenant`'s engine, in `namespace`.
pub fn url(tenant: &str, namespace: &str, db: &str) -> String {
    format!("{}/db/{db}/", endpoint(tenant, namespace))
}

/// When a token issued now for `spec.tokenLifetime` expires and is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExpiry {
    /// `spec.tokenLifetime` as written.
    pub lifetime: String,
    /// Its seconds.
    pub seconds: u64,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// When the operator writes the next one.
    pub renew_after: DateTime<Utc>,
}

/// The expiry of a token issued at `now` for `pdb`'s `spec.tokenLifetime`; `None` when
/// tokens live forever (or the value cannot be read: the CRD refuses such values).
pub fn token_expiry(pdb: &PluggableDatabase, now: DateTime<Utc>) -> Option<TokenExpiry> {
    let lifetime = pdb.spec.token_lifetime.clone()?;
    let seconds = tenantdb_crds::BackupSpec::seconds(&lifetime)?;
    let life = chrono::Duration::seconds(i64::try_from(seconds).ok()?);
    Some(TokenExpiry {
        lifetime,
        seconds,
        expires_at: now + life,
        renew_after: now + life * 2 / 3,
    })
}

/// The connection Secret of `pdb` in `tenant`'s engine, holding token `token` (engine id
/// `token_id`, expiring as `expiry` says) and the CA `ca_pem` the engine's certificate is
/// signed by, owned by `pdb` so it goes with it. `None` when `pdb` has no uid yet.
pub fn secret(
    pdb: &PluggableDatabase,
    tenant: &str,
    token_id: &str,
    token: &str,
    ca_pem: &str,
    expiry: Option<&TokenExpiry>,
) -> Option<Secret> {
    let ns = pdb.namespace()?;
    let name = pdb.name_any();
    let http = url(tenant, &ns, &name);
    let ws = http.replacen("http", "ws", 1); // https → wss
    let owner = OwnerReference {
        api_version: PluggableDatabase::api_version(&()).into_owned(),
        kind: PluggableDatabase::kind(&()).into_owned(),
        name: name.clone(),
        uid: pdb.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let data = [
        (URL_KEY, http.as_str()),
        (WS_URL_KEY, ws.as_str()),
        (TOKEN_KEY, token),
        (CA_KEY, ca_pem),
        ("database", name.as_str()),
        ("tenant", tenant),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect::<BTreeMap<_, _>>();
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: Some(ns),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (TENANT_LABEL.to_string(), tenant.to_string()),
                (DATABASE_LABEL.to_string(), name.clone()),
            ])),
            annotations: Some(annotations(token_id, expiry)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

fn annotations(token_id: &str, expiry: Option<&TokenExpiry>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([(TOKEN_ID_ANNOTATION.to_string(), token_id.to_string())]);
    if let Some(e) = expiry {
        a.insert(TOKEN_LIFETIME_ANNOTATION.into(), e.lifetime.clone());
        a.insert(TOKEN_EXPIRES_ANNOTATION.into(), e.expires_at.to_rfc3339());
        a.insert(TOKEN_RENEW_ANNOTATION.into(), e.renew_after.to_rfc3339());
    }
    a
}

/// What an existing Secret of that name is, for database `db` in `tenant`'s engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Not the operator's: it is left alone.
    Foreign,
    /// The operator's, for another engine, an old URL or CA, or another lifetime: its
    /// token (if any) is replaced and revoked.
    Stale(Option<String>),
    /// The operator's and current, but its token is past its renewal time: a new one is
    /// written and this one (with this id) is left to expire.
    Due(String),
    /// The operator's and current: the token with this id, to check in the engine.
    Current(String),
}

/// What a current connection Secret says.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The tenant whose engine holds the database.
    pub tenant: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The database.
    pub db: &'a str,
    /// The engine's CA.
    pub ca_pem: &'a str,
    /// `spec.tokenLifetime`.
    pub lifetime: Option<&'a str>,
    /// The time now.
    pub now: DateTime<Utc>,
}

/// Judge `secret` against what `want` says a current one holds.
pub fn judge(secret: &Secret, want: &Expected) -> Existing {
    let (tenant, namespace, db, ca_pem) = (want.tenant, want.namespace, want.db, want.ca_pem);
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    if labels.get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1)
        || labels.get(DATABASE_LABEL).map(String::as_str) != Some(db)
    {
        return Existing::Foreign;
    }
    let id = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOKEN_ID_ANNOTATION).cloned());
    let value = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let current = labels.get(TENANT_LABEL).map(String::as_str) == Some(tenant)
        && value(URL_KEY).as_deref() == Some(url(tenant, namespace, db).as_str())
        && value(CA_KEY).as_deref() == Some(ca_pem)
        && value(TOKEN_KEY).is_some_and(|t| !t.is_empty());
    let annotation = |k: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k).cloned())
    };
    let same_lifetime = annotation(TOKEN_LIFETIME_ANNOTATION).as_deref() == want.lifetime;
    let due = want.lifetime.is_some()
        && annotation(TOKEN_RENEW_ANNOTATION)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .is_none_or(|t| want.now >= t);
    match id {
        Some(id) if current && same_lifetime && due => Existing::Due(id),
        Some(id) if current && same_lifetime => Existing::Current(id),
        id => Existing::Stale(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want<'a>(
        tenant: &'a str,
        ca_pem: &'a str,
        lifetime: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> Expected<'a> {
        Expected {
            tenant,
            namespace: "shop",
            db: "orders",
            ca_pem,
            lifetime,
            now,
        }
    }

    fn pdb() -> PluggableDatabase {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "PluggableDatabase",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
            "spec": {"tenant": "acme"}
        }))
        .unwrap()
    }

    #[test]
    fn the_secret_holds_the_urls_the_drivers_take_and_the_token() {
        let s = secret(&pdb(), "acme", "id-1", "tdb_x", "CA", None).unwrap();
        let get = |k: &str| String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap();
        assert_eq!(
            get(URL_KEY),
            "https://acme-engine-rw.shop.svc:8080/db/orders/",
            "ends in / so v2/pipeline resolves under it"
        );
        assert_eq!(
            get(WS_URL_KEY),
            "wss://acme-engine-rw.shop.svc:8080/db/orders/"
        );
        assert_eq!(get(TOKEN_KEY), "tdb_x");
        assert_eq!(get(CA_KEY), "CA");
        assert_eq!(s.metadata.name.as_deref(), Some("orders-connection"));
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        assert_eq!(
            judge(&s, &want("acme", "CA", None, Utc::now())),
            Existing::Current("id-1".into())
        );
        // A new CA makes the details stale: the Secret is written again.
        assert_eq!(
            judge(&s, &want("acme", "another CA", None, Utc::now())),
            Existing::Stale(Some("id-1".into()))
        );
        // Round-trips through its type with nothing dropped.
        let back: Secret = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_secret_is_replaced_after_relocation_and_a_foreign_one_left_alone() {
        let s = secret(&pdb(), "acme", "id-1", "tdb_x", "CA", None).unwrap();
        assert_eq!(
            judge(&s, &want("globex", "CA", None, Utc::now())),
            Existing::Stale(Some("id-1".into()))
        );
        let mut foreign = s.clone();
        foreign.metadata.labels = None;
        assert_eq!(
            judge(&foreign, &want("acme", "CA", None, Utc::now())),
            Existing::Foreign
        );
        assert!(secret(
            &{
                let mut p = pdb();
                p.metadata.uid = None;
                p
            },
            "acme",
            "i",
            "t",
            "CA",
            None
        )
        .is_none());
    }

    #[test]
    fn an_expiring_token_is_renewed_after_two_thirds_of_its_life_and_a_new_lifetime_replaces_it() {
        let mut p = pdb();
        p.spec.token_lifetime = Some("3h".into());
        let now = Utc::now();
        let e = token_expiry(&p, now).unwrap();
        assert_eq!(e.seconds, 3 * 3600);
        assert_eq!(e.renew_after - now, chrono::Duration::hours(2));
        let s = secret(&p, "acme", "id-1", "t", "CA", Some(&e)).unwrap();
        let a = s.metadata.annotations.clone().unwrap();
        assert_eq!(a[TOKEN_EXPIRES_ANNOTATION], e.expires_at.to_rfc3339());
        let soon = now + chrono::Duration::minutes(119);
        let later = now + chrono::Duration::minutes(121);
        assert_eq!(
            judge(&s, &want("acme", "CA", Some("3h"), soon)),
            Existing::Current("id-1".into())
        );
        assert_eq!(
            judge(&s, &want("acme", "CA", Some("3h"), later)),
            Existing::Due("id-1".into()),
            "renewed, the old token left to expire"
        );
        assert_eq!(
            judge(&s, &want("acme", "CA", Some("1h"), soon)),
            Existing::Stale(Some("id-1".into())),
            "another lifetime: replaced now"
        );
        assert_eq!(
            judge(&s, &want("acme", "CA", None, soon)),
            Existing::Stale(Some("id-1".into()))
        );
        // A token that lives forever is never due.
        let forever = secret(&pdb(), "acme", "id-2", "t", "CA", None).unwrap();
        assert_eq!(
            judge(&forever, &want("acme", "CA", None, later)),
            Existing::Current("id-2".into())
        );
    }
}
