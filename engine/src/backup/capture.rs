//! What the `wal_hook` of every connection to a database records: each commit's frame
//! count and time, in memory for the shipper and appended to a file so that the commit
//! times of transactions not yet sealed survive a killed engine. And the wake-up call.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One commit as the hook saw it: frames in the WAL after it, and when (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Frames in the WAL including this commit's.
    pub frames: u32,
    /// Commit time, unix ms.
    pub ms: i64,
}

/// Per-database capture state, shared by the database's connections and its shipper.
#[derive(Debug)]
pub struct Capture {
    commits: Mutex<(VecDeque<Commit>, Option<File>)>,
    path: PathBuf,
    /// Signalled after every commit.
    pub wake: tokio::sync::Notify,
}

const RECORD: usize = 12;

impl Capture {
    /// Capture for a database whose backlog is in `dir`: commits the file there records
    /// (from a previous run) are loaded first.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("commit-times");
        let mut queue = VecDeque::new();
        if let Ok(mut f) = File::open(&path) {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            for r in buf.chunks_exact(RECORD) {
                let frames = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
                let ms = i64::from_be_bytes([r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]]);
                queue.push_back(Commit { frames, ms });
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Capture {
            commits: Mutex::new((queue, Some(file))),
            path,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Record a commit (called by the hook on the committing thread).
    pub fn committed(&self, frames: u32) {
        let ms = chrono::Utc::now().timestamp_millis();
        if let Ok(mut c) = self.commits.lock() {
            c.0.push_back(Commit { frames, ms });
            let mut rec = [0u8; RECORD];
            rec[..4].copy_from_slice(&frames.to_be_bytes());
            rec[4..].copy_from_slice(&ms.to_be_bytes());
            if let Some(f) = c.1.as_mut() {
                if let Err(e) = f.write_all(&rec) {
                    tracing::warn!(error = %e, "commit time not recorded on disk");
                }
            }
        }
        self.wake.notify_one();
    }

    /// The commit times of the commit frames at `frames` (increasing 1-based positions
    /// in the current WAL), in order, without consuming them (a segment the store refused
    /// is sealed again with the same times). Records of earlier positions are skipped
    /// (shipped before, or from before a restart of the engine). A commit whose record is
    /// missing while a later one is there lost it (the engine died between the commit and
    /// its hook): the later commit's time bounds it. A commit with no record and none after
    /// it stops the list when `wait_for` is set (its hook is about to run), else gets
    /// `fallback_ms`.
    pub fn times(&self, frames: &[u32], wait_for: bool, fallback_ms: i64) -> Vec<i64> {
        let Ok(c) = self.commits.lock() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(frames.len());
        let mut at = 0;
        for &f in frames {
            while c.0.get(at).is_some_and(|r| r.frames < f) {
                at += 1;
            }
            match c.0.get(at).copied() {
                Some(r) if r.frames == f => {
                    out.push(r.ms);
                    at += 1;
                }
                Some(r) => out.push(r.ms),
                None if wait_for => break,
                None => out.push(fallback_ms),
            }
        }
        out
    }

    /// Drop the records of commits at or before WAL frame `frame` (shipped).
    pub fn forget_through(&self, frame: u32) {
        if let Ok(mut c) = self.commits.lock() {
            while c.0.front().is_some_and(|r| r.frames <= frame) {
                c.0.pop_front();
            }
        }
    }

    /// Commits recorded and not yet shipped.
    pub fn pending(&self) -> usize {
        self.commits.lock().map_or(0, |c| c.0.len())
    }

    /// Frames in the WAL after the newest commit not yet shipped.
    pub fn newest_frames(&self) -> Option<u32> {
        self.commits.lock().ok()?.0.back().map(|r| r.frames)
    }

    /// When the oldest commit not yet shipped was made (unix ms).
    pub fn oldest_ms(&self) -> Option<i64> {
        self.commits.lock().ok()?.0.front().map(|r| r.ms)
    }

    /// Forget every record (the WAL was sealed to its end under the write lock): the file
    /// starts again.
    pub fn reset(&self) {
        if let Ok(mut c) = self.commits.lock() {
            c.0.clear();
            c.1 = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)
                .map_err(|e| tracing::warn!(error = %e, "commit-times file not reset"))
                .ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_commit_frames_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = Capture::open(dir.path()).unwrap();
        c.committed(2);
        c.committed(5);
        c.committed(6);
        let reopened = Capture::open(dir.path()).unwrap();
        let live = c.times(&[2, 5], true, 0);
        assert_eq!(live.len(), 2);
        assert_eq!(c.times(&[2, 5], true, 0), live, "reading does not consume");
        c.forget_through(5);
        // Frame 7 has no record yet: the list stops there while its hook may still run.
        assert_eq!(c.times(&[6, 7], true, 0).len(), 1);
        // After a restart the file's records are there; a lost one gets the fallback.
        let after = reopened.times(&[5, 6, 9], false, 42);
        assert_eq!(after[0], live[1]);
        assert_eq!(after[2], 42);
        reopened.reset();
        assert!(Capture::open(dir.path()).unwrap().times(&[1], false, 7) == vec![7]);
    }
}
