//! Pure: a PluggableDatabase's connection details, the Secret an application mounts
//! (as CloudNativePG's `<cluster>-app`): the database's Hrana URL by in-cluster Service
//! DNS, as the libSQL drivers take it, and a token scoped to that database alone.

use std::collections::BTreeMap;

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
/// Annotation holding the engine's id of the token, to check and revoke it.
pub const TOKEN_ID_ANNOTATION: &str = "tenantdb.io/token-id";
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

/// The connection Secret of `pdb` in `tenant`'s engine, holding token `token` (engine id
/// `token_id`), owned by `pdb` so it goes with it. `None` when `pdb` has no uid yet.
pub fn secret(
    pdb: &PluggableDatabase,
    tenant: &str,
    token_id: &str,
    token: &str,
) -> Option<Secret> {
    let ns = pdb.namespace()?;
    let name = pdb.name_any();
    let http = url(tenant, &ns, &name);
    let ws = http.replacen("http", "ws", 1);
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
            annotations: Some(BTreeMap::from([(
                TOKEN_ID_ANNOTATION.to_string(),
                token_id.to_string(),
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// What an existing Secret of that name is, for database `db` in `tenant`'s engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Not the operator's: it is left alone.
    Foreign,
    /// The operator's, for another engine or an old URL: its token (if any) is replaced.
    Stale(Option<String>),
    /// The operator's and current: the token with this id, to check in the engine.
    Current(String),
}

/// Judge `secret` against database `db` of `tenant` in `namespace`.
pub fn judge(secret: &Secret, tenant: &str, namespace: &str, db: &str) -> Existing {
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
        && value(TOKEN_KEY).is_some_and(|t| !t.is_empty());
    match id {
        Some(id) if current => Existing::Current(id),
        id => Existing::Stale(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = secret(&pdb(), "acme", "id-1", "tdb_x").unwrap();
        let get = |k: &str| String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap();
        assert_eq!(
            get(URL_KEY),
            "http://acme-engine.shop.svc:8080/db/orders/",
            "ends in / so v2/pipeline resolves under it"
        );
        assert_eq!(get(WS_URL_KEY), "ws://acme-engine.shop.svc:8080/db/orders/");
        assert_eq!(get(TOKEN_KEY), "tdb_x");
        assert_eq!(s.metadata.name.as_deref(), Some("orders-connection"));
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        assert_eq!(
            judge(&s, "acme", "shop", "orders"),
            Existing::Current("id-1".into())
        );
        // Round-trips through its type with nothing dropped.
        let back: Secret = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_secret_is_replaced_after_relocation_and_a_foreign_one_left_alone() {
        let s = secret(&pdb(), "acme", "id-1", "tdb_x").unwrap();
        assert_eq!(
            judge(&s, "globex", "shop", "orders"),
            Existing::Stale(Some("id-1".into()))
        );
        let mut foreign = s.clone();
        foreign.metadata.labels = None;
        assert_eq!(judge(&foreign, "acme", "shop", "orders"), Existing::Foreign);
        assert!(secret(
            &{
                let mut p = pdb();
                p.metadata.uid = None;
                p
            },
            "acme",
            "i",
            "t"
        )
        .is_none());
    }
}
