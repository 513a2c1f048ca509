//! What the primary and a standby say to each other over the replication WebSocket.
//! Primary → standby: binary messages, a JSON [`Envelope`] (length first) then a payload
//! (a base's bytes, a sealed segment). Standby → primary: JSON text [`Reply`]s. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenantdb_engine_api::replication::FilePosition;

/// Bytes of a base sent in one message.
pub const BASE_CHUNK: usize = 1 << 20;

/// What a message from the primary is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Message {
    /// Part of a base copy of `file`; the last part has `offset + len == total`.
    #[serde(rename_all = "camelCase")]
    Base {
        /// File.
        file: String,
        /// Incarnation the base starts.
        incarnation: String,
        /// Transaction the copy holds.
        txid: u64,
        /// Running checksum at that transaction.
        checksum: String,
        /// Where this part goes.
        offset: u64,
        /// Length of the whole copy.
        total: u64,
    },
    /// A sealed segment of `file` (its incarnation is the segment's generation).
    Segment {
        /// File.
        file: String,
    },
    /// `file` was dropped on the primary.
    Drop {
        /// File.
        file: String,
    },
    /// Nothing new; how far behind the standby is.
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        /// Transactions the primary has that the standby did not acknowledge.
        lag_transactions: u64,
        /// The same in WAL bytes.
        lag_bytes: u64,
    },
}

/// A message with the epoch of the primary that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's epoch.
    pub epoch: u64,
    /// The message.
    #[serde(flatten)]
    pub message: Message,
}

/// What a standby says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reply {
    /// First: the newest epoch it has seen and where each of its files stands.
    Hello {
        /// Newest epoch seen.
        epoch: u64,
        /// Its files.
        files: BTreeMap<String, FilePosition>,
    },
    /// `file` is durable up to `txid` of `incarnation`.
    Ack {
        /// File.
        file: String,
        /// Incarnation.
        incarnation: String,
        /// Transaction.
        txid: u64,
    },
}

/// Why a message cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a message of this protocol.
    #[error("replication message: {0}")]
    Malformed(String),
}

/// Encode a message and its payload.
pub fn encode(env: &Envelope, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(env).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + json.len() + payload.len());
    out.extend((json.len() as u32).to_be_bytes());
    out.extend(json);
    out.extend(payload);
    out
}

/// Decode a message; the payload is what follows it.
pub fn decode(bytes: &[u8]) -> Result<(Envelope, &[u8]), WireError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| WireError::Malformed("shorter than its length".into()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(WireError::Malformed("header cut short".into()));
    }
    let env =
        serde_json::from_slice(&rest[..len]).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((env, &rest[len..]))
}

/// Whether `file` names a replicated file: the catalog or a database, nothing else
/// (a name from the wire never leaves the data directory).
pub fn valid_file(file: &str) -> bool {
    if file == "catalog.db" {
        return true;
    }
    file.strip_prefix("pdbs/")
        .and_then(|f| f.strip_suffix(".db"))
        .is_some_and(|name| crate::names::validate("database", name).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let env = Envelope {
            epoch: 3,
            message: Message::Segment {
                file: "pdbs/a.db".into(),
            },
        };
        let bytes = encode(&env, b"seg");
        assert_eq!(decode(&bytes).unwrap(), (env, &b"seg"[..]));
        assert!(decode(&[0, 0, 0, 9, b'{']).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(&[0, 0, 0, 2, b'{', b'}']).is_err());
    }

    #[test]
    fn only_the_catalog_and_databases_are_files() {
        assert!(valid_file("catalog.db"));
        assert!(valid_file("pdbs/orders.db"));
        for bad in [
            "pdbs/../x.db",
            "../catalog.db",
            "/etc/passwd",
            "pdbs/a/b.db",
            "seed.db",
            "pdbs/.db",
        ] {
            assert!(!valid_file(bad), "{bad}");
        }
    }
}
