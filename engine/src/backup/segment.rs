//! A sealed segment: whole transactions of one database as WAL frames with their commit
//! times, chained to the previous segment by a running checksum. The unit that waits in
//! the backlog and goes to the object store. Pure: encode, decode, verify.
//!
//! Layout: magic, header length (u32), header (JSON), body. Version 2 (`TDBSEG2`) stores
//! the body LZ4-compressed (block format, its plain length first): successive versions of
//! the same page sit a few KiB apart in a WAL, so a segment shrinks many times over, and
//! every byte not sent is a byte nobody hashes, signs, uploads or stores. Version 1
//! (`TDBSEG1`, plain body) is still read. The running checksum covers the body as stored, so
//! a segment is verified before anything is decompressed, and the hash runs over the small
//! bytes, not the large ones.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC_PLAIN: &[u8; 8] = b"TDBSEG1\n";
const MAGIC_LZ4: &[u8; 8] = b"TDBSEG2\n";
/// LZ4 never expands more than this many times: a larger plain length is a lie.
const LZ4_MAX_RATIO: usize = 255;
const FRAME_FIXED: usize = 16;

/// What a segment says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentHeader {
    /// Generation the segment belongs to.
    pub generation: String,
    /// First transaction in it.
    pub first_txid: u64,
    /// Last transaction in it.
    pub last_txid: u64,
    /// Page size of every frame.
    pub page_size: u32,
    /// Commit time of the first transaction, unix ms.
    pub first_ms: i64,
    /// Commit time of the last transaction, unix ms.
    pub last_ms: i64,
    /// Running checksum after the previous segment (the generation's base: its name).
    pub prev_checksum: String,
    /// Running checksum after this one.
    pub checksum: String,
}

/// One frame of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFrame {
    /// Page number (from 1).
    pub page: u32,
    /// Database size in pages after this commit, or 0 inside a transaction.
    pub commit_size: u32,
    /// Commit time, unix ms, on a commit frame; 0 otherwise.
    pub commit_ms: i64,
    /// The page.
    pub data: Vec<u8>,
}

/// Why a segment cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    /// Not a segment, or cut short.
    #[error("not a TenantDB segment or truncated: {0}")]
    Malformed(String),
    /// Bytes changed since it was sealed.
    #[error("segment checksum mismatch")]
    Checksum,
}

/// Running checksum: SHA-256 over the previous one and the body as stored.
fn chain(prev: &str, frames: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(frames);
    hex::encode(h.finalize())
}

fn frame_bytes(frames: &[SegmentFrame]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| FRAME_FIXED + f.data.len()).sum());
    for f in frames {
        out.extend(f.page.to_be_bytes());
        out.extend(f.commit_size.to_be_bytes());
        out.extend(f.commit_ms.to_be_bytes());
        out.extend(&f.data);
    }
    out
}

/// Seal frames of whole transactions `first_txid…` into a segment's bytes; returns them
/// with the header written (its checksum is the new running checksum).
pub fn seal(
    generation: &str,
    first_txid: u64,
    page_size: u32,
    prev_checksum: &str,
    frames: &[SegmentFrame],
) -> (SegmentHeader, Vec<u8>) {
    let commits: Vec<i64> = frames
        .iter()
        .filter(|f| f.commit_size != 0)
        .map(|f| f.commit_ms)
        .collect();
    let plain = frame_bytes(frames);
    let mut body = Vec::with_capacity(4 + plain.len() / 2);
    body.extend((plain.len() as u32).to_be_bytes());
    body.extend(lz4_flex::block::compress(&plain));
    let header = SegmentHeader {
        generation: generation.to_string(),
        first_txid,
        last_txid: first_txid + commits.len() as u64 - 1,
        page_size,
        first_ms: commits.first().copied().unwrap_or(0),
        last_ms: commits.last().copied().unwrap_or(0),
        prev_checksum: prev_checksum.to_string(),
        checksum: chain(prev_checksum, &body),
    };
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(12 + json.len() + body.len());
    out.extend(MAGIC_LZ4);
    out.extend((json.len() as u32).to_be_bytes());
    out.extend(json);
    out.extend(body);
    (header, out)
}

/// Read a segment's header without its frames.
pub fn read_header(bytes: &[u8]) -> Result<(SegmentHeader, usize), SegmentError> {
    if bytes.len() < 12 || (&bytes[..8] != MAGIC_PLAIN && &bytes[..8] != MAGIC_LZ4) {
        return Err(SegmentError::Malformed("no magic".into()));
    }
    let n = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let end = 12usize.checked_add(n).filter(|e| *e <= bytes.len());
    let end = end.ok_or_else(|| SegmentError::Malformed("header cut short".into()))?;
    let header: SegmentHeader = serde_json::from_slice(&bytes[12..end])
        .map_err(|e| SegmentError::Malformed(e.to_string()))?;
    Ok((header, end))
}

/// Decode and verify a whole segment.
pub fn open(bytes: &[u8]) -> Result<(SegmentHeader, Vec<SegmentFrame>), SegmentError> {
    let (header, start) = read_header(bytes)?;
    if chain(&header.prev_checksum, &bytes[start..]) != header.checksum {
        return Err(SegmentError::Checksum);
    }
    let body = body(&bytes[..8] == MAGIC_LZ4, &bytes[start..])?;
    let body = body.as_ref();
    let step = FRAME_FIXED + header.page_size as usize;
    if header.page_size == 0 || !body.len().is_multiple_of(step) {
        return Err(SegmentError::Malformed("frames cut short".into()));
    }
    let frames = body
        .chunks_exact(step)
        .map(|c| SegmentFrame {
            page: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            commit_size: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            commit_ms: i64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
            data: c[FRAME_FIXED..].to_vec(),
        })
        .collect();
    Ok((header, frames))
}

/// The plain body of a segment: as stored, or LZ4-decompressed (its claimed length
/// checked against what LZ4 can expand to before anything is allocated).
fn body(compressed: bool, stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, SegmentError> {
    if !compressed {
        return Ok(std::borrow::Cow::Borrowed(stored));
    }
    let cut = || SegmentError::Malformed("compressed body cut short".into());
    let (len, packed) = stored.split_first_chunk::<4>().ok_or_else(cut)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > packed.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(cut());
    }
    let plain = lz4_flex::block::decompress(packed, len)
        .map_err(|e| SegmentError::Malformed(format!("compressed body: {e}")))?;
    if plain.len() != len {
        return Err(cut());
    }
    Ok(std::borrow::Cow::Owned(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<SegmentFrame> {
        vec![
            SegmentFrame {
                page: 1,
                commit_size: 0,
                commit_ms: 0,
                data: vec![1; 512],
            },
            SegmentFrame {
                page: 2,
                commit_size: 2,
                commit_ms: 1000,
                data: vec![2; 512],
            },
            SegmentFrame {
                page: 3,
                commit_size: 3,
                commit_ms: 2000,
                data: vec![3; 512],
            },
        ]
    }

    #[test]
    fn seals_and_opens_with_the_chain() {
        let (h, bytes) = seal("g", 5, 512, "base", &frames());
        assert_eq!(
            (h.first_txid, h.last_txid, h.first_ms, h.last_ms),
            (5, 6, 1000, 2000)
        );
        let (h2, f2) = open(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(f2, frames());
        let (next, _) = seal("g", 7, 512, &h.checksum, &frames()[..2]);
        assert_eq!(next.prev_checksum, h.checksum);
        assert_ne!(next.checksum, h.checksum);
    }

    #[test]
    fn a_changed_byte_or_a_cut_is_refused() {
        let (_, mut bytes) = seal("g", 1, 512, "base", &frames());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(open(&bytes).unwrap_err(), SegmentError::Checksum);
        assert!(matches!(
            open(&bytes[..20]),
            Err(SegmentError::Malformed(_))
        ));
        assert!(matches!(open(b"nonsense"), Err(SegmentError::Malformed(_))));
    }

    /// A version-1 segment as the first releases sealed it: the same header, plain body.
    fn plain(frames: &[SegmentFrame]) -> Vec<u8> {
        let (mut h, _) = seal("g", 1, 512, "base", frames);
        h.checksum = chain("base", &frame_bytes(frames));
        let json = serde_json::to_vec(&h).unwrap();
        let mut out = MAGIC_PLAIN.to_vec();
        out.extend((json.len() as u32).to_be_bytes());
        out.extend(json);
        out.extend(frame_bytes(frames));
        out
    }

    #[test]
    fn version_one_segments_still_open_and_their_checksum_is_checked() {
        let mut bytes = plain(&frames());
        assert_eq!(open(&bytes).unwrap().1, frames());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(open(&bytes).unwrap_err(), SegmentError::Checksum);
    }

    #[test]
    fn successive_versions_of_a_page_compress() {
        // A leaf page that gains a row per commit, as single-row inserts write it.
        let frames: Vec<SegmentFrame> = (0..256u32)
            .map(|i| {
                let mut data = vec![0u8; 4096];
                for row in 0..=i as usize {
                    data[4096 - 16 * (row + 1)..4096 - 16 * row].fill(row as u8 | 1);
                }
                SegmentFrame {
                    page: 7,
                    commit_size: 9,
                    commit_ms: 1000 + i64::from(i),
                    data,
                }
            })
            .collect();
        let (h, bytes) = seal("g", 1, 4096, "base", &frames);
        let plain_len = frames.len() * (FRAME_FIXED + 4096);
        assert!(
            bytes.len() * 10 < plain_len,
            "{} bytes sealed from {plain_len}",
            bytes.len()
        );
        assert_eq!(open(&bytes).unwrap(), (h, frames));
    }

    #[test]
    fn a_compressed_length_that_lies_is_refused_before_allocating() {
        // Behind a valid checksum (a store that hands back what a buggy writer put).
        let lying = [&u32::MAX.to_be_bytes()[..], &[0x10, b'x']].concat();
        assert!(matches!(
            body(true, &lying),
            Err(SegmentError::Malformed(_))
        ));
        assert!(matches!(
            body(true, &[0, 0]),
            Err(SegmentError::Malformed(_))
        ));
        let short = [&8u32.to_be_bytes()[..], &[0x10, b'x']].concat();
        assert!(matches!(
            body(true, &short),
            Err(SegmentError::Malformed(_))
        ));
    }
}
