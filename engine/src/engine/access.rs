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

/// What the engine tells of a token: its id and the databases it opens.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// The databases it opens (`*`: all).
    pub databases: Vec<String>,
}

impl Engine {
    /// Issue a data token for `databases` (`["*"]` = every database of this engine).
    pub fn issue_token(&self, databases: Vec<String>) -> Result<(String, String)> {
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
        )?;
        self.tokens
            .write()
            .map_err(EngineError::internal)?
            .insert(hash, (id.clone(), databases));
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
            .retain(|_, (tid, _)| tid != id);
        Ok(())
    }

    /// What tenant token `token` says about database `name`: `None` when it is no tenant
    /// token of this engine (revoked, another tenant's, or not a tenant token at all);
    /// otherwise Ok, or 403 when it is valid only for other databases.
    pub fn token_grants(&self, token: &str, name: &str) -> Option<Result<()>> {
        let tokens = match self.tokens.read() {
            Ok(t) => t,
            Err(e) => return Some(Err(EngineError::internal(e))),
        };
        let mut buf = [0u8; 64];
        let (_, dbs) = tokens.get(sha256_hex_in(token, &mut buf))?;
        Some(if dbs.iter().any(|d| d == "*" || d == name) {
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
            .find(|(tid, _)| tid == id)
            .map(|(tid, dbs)| TokenInfo {
                id: tid.clone(),
                databases: dbs.clone(),
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
            .filter(|(_, dbs)| dbs.iter().any(|d| d == name))
            .map(|(id, dbs)| {
                (
                    id.clone(),
                    dbs.iter().filter(|d| *d != name).cloned().collect(),
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
                    .find(|(tid, _)| *tid == id)
                {
                    entry.1 = rest;
                }
            }
        }
        Ok(())
    }
}
