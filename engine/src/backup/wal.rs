//! Reading SQLite's WAL file: the header, frames, and the cumulative checksum that tells
//! committed frames from a frame being written or one left from before a WAL restart.
//! Pure over a reader, so every rule here is tested on bytes made in the test.
//!
//! Format (sqlite.org/fileformat.html, "WAL file format"): a 32-byte header (magic, format
//! version, page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2), then
//! frames of a 24-byte header (page number, database size in pages after a commit or 0,
//! salt-1, salt-2, checksum-1, checksum-2) and one page. All fields big-endian; the
//! checksum words are read in the byte order the magic's low bit names.

use std::io::{self, Read, Seek, SeekFrom};

/// Length of the WAL header.
pub const HEADER_LEN: u64 = 32;
/// Length of a frame's header.
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// The WAL header: what identifies one incarnation of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Page size of the database.
    pub page_size: u32,
    /// Salts: a restart of the log changes them, so frames of an older log never match.
    pub salt: (u32, u32),
    /// The header's own checksum: the seed of the first frame's.
    pub checksum: (u32, u32),
    /// Checksum words are big-endian (magic ends in 3).
    pub big_endian: bool,
}

/// Where reading stopped: the log incarnation, frames consumed, and the checksum after
/// the last one (what the next frame's checksum builds on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Salts of the log the frames came from.
    pub salt: (u32, u32),
    /// Frames consumed from that log.
    pub frames: u32,
    /// Cumulative checksum after the last consumed frame.
    pub checksum: (u32, u32),
}

/// One committed frame as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Page number (from 1).
    pub page: u32,
    /// Database size in pages after this commit; 0 for a frame that is not a commit's last.
    pub commit_size: u32,
    /// The page's bytes.
    pub data: Vec<u8>,
}

/// What a scan found: committed frames after the cursor, and the cursor after them.
#[derive(Debug)]
pub struct Scan {
    /// The header of the log read.
    pub header: Header,
    /// Whether the log restarted since the cursor (new salts): reading began at frame 1.
    pub restarted: bool,
    /// Frames of whole transactions, in order.
    pub frames: Vec<Frame>,
    /// The cursor after the last commit frame returned.
    pub cursor: Cursor,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `seed`.
pub fn checksum(data: &[u8], seed: (u32, u32), big_endian: bool) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (be32(&pair[..4]), be32(&pair[4..]))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s0 = s0.wrapping_add(a).wrapping_add(s1);
        s1 = s1.wrapping_add(b).wrapping_add(s0);
    }
    (s0, s1)
}

/// Parse and verify a WAL header; `None` for anything that is not a valid one (an empty
/// or truncated log included).
pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN as usize {
        return None;
    }
    let big_endian = match be32(&b[0..4]) {
        MAGIC_BE => true,
        MAGIC_LE => false,
        _ => return None,
    };
    let page_size = be32(&b[8..12]);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let stored = (be32(&b[24..28]), be32(&b[28..32]));
    if checksum(&b[..24], (0, 0), big_endian) != stored {
        return None;
    }
    Some(Header {
        page_size,
        salt: (be32(&b[16..20]), be32(&b[20..24])),
        checksum: stored,
        big_endian,
    })
}

/// Read the committed frames after `from` from a WAL, stopping at the first frame that
/// is short, carries other salts or fails its checksum, and keeping only frames up to
/// the last commit frame before that point; at most about `max_bytes` of pages (whole
/// transactions: one larger than that comes whole). `Ok(None)` when there is no valid
/// header (no log yet, or one being created).
pub fn scan<R: Read + Seek>(
    log: &mut R,
    from: &Cursor,
    max_bytes: usize,
) -> io::Result<Option<Scan>> {
    let mut head = [0u8; HEADER_LEN as usize];
    log.seek(SeekFrom::Start(0))?;
    if read_full(log, &mut head)? < head.len() {
        return Ok(None);
    }
    let Some(header) = parse_header(&head) else {
        return Ok(None);
    };
    let restarted = header.salt != from.salt;
    let start = if restarted {
        Cursor {
            salt: header.salt,
            frames: 0,
            checksum: header.checksum,
        }
    } else {
        *from
    };
    let ps = header.page_size as u64;
    log.seek(SeekFrom::Start(
        HEADER_LEN + start.frames as u64 * (FRAME_HEADER_LEN + ps),
    ))?;
    let mut pending: Vec<Frame> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let (mut at, mut sum) = (start, start.checksum);
    let mut n = start.frames;
    let mut bytes = 0usize;
    let mut buf = vec![0u8; (FRAME_HEADER_LEN + ps) as usize];
    loop {
        if read_full(log, &mut buf)? < buf.len() {
            break;
        }
        let h = &buf[..FRAME_HEADER_LEN as usize];
        if (be32(&h[8..12]), be32(&h[12..16])) != header.salt {
            break;
        }
        let mut next = checksum(&h[..8], sum, header.big_endian);
        next = checksum(&buf[FRAME_HEADER_LEN as usize..], next, header.big_endian);
        if next != (be32(&h[16..20]), be32(&h[20..24])) {
            break;
        }
        sum = next;
        n += 1;
        let commit_size = be32(&h[4..8]);
        pending.push(Frame {
            page: be32(&h[0..4]),
            commit_size,
            data: buf[FRAME_HEADER_LEN as usize..].to_vec(),
        });
        if commit_size != 0 {
            bytes += pending.len() * ps as usize;
            frames.append(&mut pending);
            at = Cursor {
                salt: header.salt,
                frames: n,
                checksum: sum,
            };
            if bytes >= max_bytes {
                break;
            }
        }
    }
    Ok(Some(Scan {
        header,
        restarted,
        frames,
        cursor: at,
    }))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as Bytes;

    /// A WAL as SQLite writes it (big-endian checksums), frames `(page, commit_size)`.
    fn wal(salt: (u32, u32), frames: &[(u32, u32)], ps: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC_BE.to_be_bytes());
        out.extend(3_007_000u32.to_be_bytes());
        out.extend(ps.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(salt.0.to_be_bytes());
        out.extend(salt.1.to_be_bytes());
        let mut sum = checksum(&out, (0, 0), true);
        out.extend(sum.0.to_be_bytes());
        out.extend(sum.1.to_be_bytes());
        for (i, (page, commit)) in frames.iter().enumerate() {
            let mut h = Vec::new();
            h.extend(page.to_be_bytes());
            h.extend(commit.to_be_bytes());
            let data = vec![i as u8; ps as usize];
            sum = checksum(&h, sum, true);
            sum = checksum(&data, sum, true);
            h.extend(salt.0.to_be_bytes());
            h.extend(salt.1.to_be_bytes());
            h.extend(sum.0.to_be_bytes());
            h.extend(sum.1.to_be_bytes());
            out.extend(h);
            out.extend(data);
        }
        out
    }

    #[test]
    fn reads_whole_transactions_only() {
        let log = wal((7, 9), &[(1, 0), (2, 3), (3, 0)], 512);
        let s = scan(&mut Bytes::new(log), &Cursor::default(), usize::MAX)
            .unwrap()
            .unwrap();
        assert!(s.restarted);
        assert_eq!(s.frames.len(), 2, "the third frame has no commit after it");
        assert_eq!(s.cursor.frames, 2);
        assert_eq!(s.frames[1].commit_size, 3);
        assert_eq!(s.frames[1].data[0], 1);
    }

    #[test]
    fn continues_from_a_cursor_and_notices_a_restart() {
        let log = wal((7, 9), &[(1, 1), (2, 2), (3, 3)], 512);
        let first = scan(&mut Bytes::new(log.clone()), &Cursor::default(), 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            first.frames.len(),
            1,
            "stops after the transaction that reached max_bytes"
        );
        let rest = scan(&mut Bytes::new(log), &first.cursor, usize::MAX)
            .unwrap()
            .unwrap();
        assert!(!rest.restarted);
        assert_eq!(
            rest.frames.iter().map(|f| f.page).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // A new log (other salts) over the old file: reading starts again at frame 1.
        let mut newer = wal((8, 1), &[(5, 5)], 512);
        let old = wal((7, 9), &[(1, 1), (2, 2), (3, 3)], 512);
        newer.extend_from_slice(&old[newer.len()..]);
        let again = scan(&mut Bytes::new(newer), &rest.cursor, usize::MAX)
            .unwrap()
            .unwrap();
        assert!(again.restarted);
        assert_eq!(again.frames.len(), 1, "frames of the old log do not chain");
        assert_eq!(again.frames[0].page, 5);
    }

    #[test]
    fn a_torn_or_corrupt_frame_ends_the_scan() {
        let mut log = wal((1, 2), &[(1, 1), (2, 2)], 512);
        let last = log.len() - 10;
        log[last] ^= 0xff;
        let s = scan(&mut Bytes::new(log.clone()), &Cursor::default(), usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(s.frames.len(), 1);
        log.truncate(log.len() - 100);
        let s = scan(&mut Bytes::new(log), &Cursor::default(), usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(s.frames.len(), 1);
    }

    #[test]
    fn no_header_is_no_log() {
        assert!(scan(&mut Bytes::new(vec![]), &Cursor::default(), 1)
            .unwrap()
            .is_none());
        let mut log = wal((1, 2), &[], 512);
        log[30] ^= 1;
        assert!(scan(&mut Bytes::new(log), &Cursor::default(), 1)
            .unwrap()
            .is_none());
    }
}
