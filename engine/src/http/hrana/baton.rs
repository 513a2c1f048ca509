//! Batons: what a Hrana-over-HTTP client sends back to stay on its stream. A baton names
//! the stream and the request's place in it, and is signed with a key only this engine
//! process holds (HMAC-SHA256 over the database, the stream and the sequence number), so
//! a baton cannot be forged, replayed, or used for another database or another tenant's
//! engine.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs and checks batons.
pub struct Batons {
    key: [u8; 32],
}

/// Why a baton was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatonError {
    /// Not a baton this engine signed for this database.
    Invalid,
}

const MAC_LEN: usize = 16;
const LEN: usize = 8 + 8 + MAC_LEN;

impl Batons {
    /// A signer with a fresh random key.
    pub fn new() -> Self {
        Batons {
            key: rand::random(),
        }
    }

    fn mac(&self, database: &str, stream: u64, seq: u64) -> [u8; MAC_LEN] {
        // HMAC takes a key of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(&stream.to_be_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(database.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The baton for request `seq` of `stream` on `database`.
    pub fn sign(&self, database: &str, stream: u64, seq: u64) -> String {
        let mut raw = [0u8; LEN];
        raw[..8].copy_from_slice(&stream.to_be_bytes());
        raw[8..16].copy_from_slice(&seq.to_be_bytes());
        raw[16..].copy_from_slice(&self.mac(database, stream, seq));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The stream and sequence number of `baton`, if this engine signed it for `database`.
    pub fn open(&self, database: &str, baton: &str) -> Result<(u64, u64), BatonError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(baton.as_bytes())
            .map_err(|_| BatonError::Invalid)?;
        if raw.len() != LEN {
            return Err(BatonError::Invalid);
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&raw[..8]);
        let stream = u64::from_be_bytes(word);
        word.copy_from_slice(&raw[8..16]);
        let seq = u64::from_be_bytes(word);
        let want = self.mac(database, stream, seq);
        // Constant time: a forger learns nothing from how long the comparison took.
        let diff = want
            .iter()
            .zip(&raw[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(BatonError::Invalid);
        }
        Ok((stream, seq))
    }
}

impl Default for Batons {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baton_opens_only_for_its_database_and_signer() {
        let b = Batons::new();
        let baton = b.sign("orders", 7, 3);
        assert_eq!(b.open("orders", &baton), Ok((7, 3)));
        assert_eq!(b.open("ledger", &baton), Err(BatonError::Invalid));
        assert_eq!(
            Batons::new().open("orders", &baton),
            Err(BatonError::Invalid),
            "another engine's key"
        );
        // Any changed byte, a truncation or garbage is refused.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&baton)
            .unwrap();
        raw[9] ^= 1;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(b.open("orders", &forged), Err(BatonError::Invalid));
        assert_eq!(b.open("orders", &baton[..20]), Err(BatonError::Invalid));
        assert_eq!(b.open("orders", "not a baton!"), Err(BatonError::Invalid));
        assert_ne!(b.sign("orders", 7, 4), baton);
    }
}
