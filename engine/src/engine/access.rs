//! Data tokens: issued by the operator for some databases (or `*`), kept in the catalog
//! by their hash, checked on every data-plane request, revoked by id — and when the last
//! database a token names is dropped or unplugged, so a database made again under the
//! same name does not open to an old token.

use sha2::{Digest, Sha256};

use super::Engine;
use crate::error::{EngineError, Result};
use crate::names;

/// 403 for a token this engine does not know (revoked, or another tenant's), asking for
/// database `name`.
pub fn unknown_token(name: &str) -> EngineError {
    EngineError::Forbidden(format!(
        "the token presented is not valid in this engine, so not for database {name}"
    ))
}

pub(super) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// [`sha256_hex`] into `buf`, without allocating: it runs on every data-plane request.
fn sha256_hex_in<'b>(s: &str, buf: &'b mut [u8; 64]) -> &'b str {
    let _ = hex::encode_to_slice(Sha256::digest(s.as_bytes()), buf);
    std::str::from_utf8(buf).unwrap_or_default()
}

/// What the engine tells of a token: its id, the databases it opens and its expiry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// The databases it opens (`*`: all).
    pub databases: Vec<String>,
    /// When it stops opening anything (Unix seconds); never when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A data token as the engine holds it, by the hash of its value.
#[derive(Debug, Clone)]
pub(super) struct TokenEntry {
    pub(super) id: String,
    pub(super) databases: Vec<String>,
    /// Unix seconds after which it opens nothing.
    pub(super) expires_at: Option<i64>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Engine {
    /// Issue a data token for `databases` (`["*"]` = every database of this engine).
    pub fn issue_token(&self, databases: Vec<String>) -> Result<(String, String)> {
        self.issue_token_expiring(databases, None)
    }

    /// Issue a data token for `databases` that opens nothing after `lifetime_seconds`
    /// (never, with `None`).
    pub fn issue_token_expiring(
        &self,
        databases: Vec<String>,
        lifetime_seconds: Option<u64>,
    ) -> Result<(String, String)> {
        if lifetime_seconds == Some(0) {
            return Err(EngineError::BadRequest(
                "a token's lifetime is at least one second".into(),
            ));
        }
        let expires_at = lifetime_seconds
            .map(|s| unix_now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        if databases.is_empty() {
            return Err(EngineError::BadRequest(
                "a token names at least one database, or \"*\"".into(),
            ));
        }
        for d in databases.iter().filter(|d| *d != "*") {
            names::validate("database", d)?;
        }
        let token = format!(
            "tdb_{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let id = format!("{:016x}", rand::random::<u64>());
        let hash = sha256_hex(&token);
        self.catalog.put_token(
            &id,
            &hash,
            &serde_json::to_string(&databases).map_err(EngineError::internal)?,
            expires_at,
        )?;
        self.tokens.write().map_err(EngineError::internal)?.insert(
            hash,
            TokenEntry {
                id: id.clone(),
                databases,
                expires_at,
            },
        );
        Ok((id, token))
    }

    /// Revoke a data token.
    pub fn revoke_token(&self, id: &str) -> Result<()> {
        if !self.catalog.delete_token(id)? {
            return Err(EngineError::NotFound(format!("no token with id {id}")));
        }
        self.tokens
            .write()
            .map_err(EngineError::internal)?
            .retain(|_, t| t.id != id);
        Ok(())
    }

    /// What tenant token `token` says about database `name`: `None` when it is no tenant
    /// token of this engine (revoked, another tenant's, or not a tenant token at all);
    /// otherwise Ok, 401 when it has expired, or 403 when it is valid only for other
    /// databases.
    pub fn token_grants(&self, token: &str, name: &str) -> Option<Result<()>> {
        let tokens = match self.tokens.read() {
            Ok(t) => t,
            Err(e) => return Some(Err(EngineError::internal(e))),
        };
        let mut buf = [0u8; 64];
        let entry = tokens.get(sha256_hex_in(token, &mut buf))?;
        if let Some(at) = entry.expires_at.filter(|at| unix_now() >= *at) {
            return Some(Err(EngineError::Unauthorized(format!(
                "this token expired at {} (Unix seconds {at}): use the one in the database's connection Secret now",
                chrono::DateTime::from_timestamp(at, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ))));
        }
        Some(if entry.databases.iter().any(|d| d == "*" || d == name) {
            Ok(())
        } else {
            Err(EngineError::Forbidden(format!(
                "this token is not valid for database {name}"
            )))
        })
    }

    /// The token with id `id`.
    pub fn token_info(&self, id: &str) -> Result<TokenInfo> {
        let tokens = self.tokens.read().map_err(EngineError::internal)?;
        tokens
            .values()
            .find(|t| t.id == id)
            .map(|t| TokenInfo {
                id: t.id.clone(),
                databases: t.databases.clone(),
                expires_at: t.expires_at,
            })
            .ok_or_else(|| EngineError::NotFound(format!("no token with id {id}")))
    }

    /// Database `name` is gone: tokens for it alone are revoked, and it leaves the others.
    pub(super) fn forget_tokens_of(&self, name: &str) -> Result<()> {
        let touched: Vec<(String, Vec<String>)> = self
            .tokens
            .read()
            .map_err(EngineError::internal)?
            .values()
            .filter(|t| t.databases.iter().any(|d| d == name))
            .map(|t| {
                (
                    t.id.clone(),
                    t.databases.iter().filter(|d| *d != name).cloned().collect(),
                )
            })
            .collect();
        for (id, rest) in touched {
            if rest.is_empty() {
                self.revoke_token(&id)?;
            } else {
                let json = serde_json::to_string(&rest).map_err(EngineError::internal)?;
                self.catalog.set_token_databases(&id, &json)?;
                if let Some(entry) = self
                    .tokens
                    .write()
                    .map_err(EngineError::internal)?
                    .values_mut()
                    .find(|t| t.id == id)
                {
                    entry.databases = rest;
                }
            }
        }
        Ok(())
    }
}
