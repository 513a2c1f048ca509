//! File operations the lifecycle needs: opening database files, durable writes and
//! renames, copy-on-write clones (reflink) where the filesystem can, and checksums.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

/// The SQLite VFS every database file is opened with. `unix-excl`: the engine is the only
/// process that may touch its databases, so the first connection takes an exclusive
/// lock on the file for the whole process and the WAL index lives in the engine's own
/// memory. Connections inside the engine still coordinate (in memory), but a transaction
/// costs no `fcntl` calls (a point select made two), and no other process can open a
/// live database behind the engine's back. Every connection to a database file must use
/// it: mixing VFSes on one file in one process would mix two locking schemes.
pub const VFS: &str = "unix-excl";

static ENGINE_CHECKPOINTS_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// From now on, every connection [`open_db`] makes leaves checkpoints to the backup
/// shipper: no automatic checkpoint and none on close (see `docs/backup.md`). Process-wide,
/// like the VFS: one connection that checkpoints on close would fold unshipped frames
/// into the database behind the shipper.
pub fn leave_checkpoints_to_the_shipper() {
    ENGINE_CHECKPOINTS_ONLY.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// No automatic checkpoint on `conn`, and none when it closes.
pub fn configure_no_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    crate::backup::shipper::configure(conn)
}

/// Open the database file at `path` with the engine's [`VFS`].
pub fn open_db(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags_and_vfs(path, flags, VFS)?;
    if ENGINE_CHECKPOINTS_ONLY.load(std::sync::atomic::Ordering::SeqCst) {
        crate::backup::shipper::configure(&conn)?;
    }
    Ok(conn)
}

/// Open a database that other connections of the engine may be using, to read it. Read
/// and write as far as SQLite is concerned, with `query_only` on: a read-only unix-excl
/// connection takes an ordinary shared lock, which would turn the process's exclusive
/// lock on the file into a shared one.
pub fn open_live_db_for_reading(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_db(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Open (or create) the database file at `path` for reading and writing.
pub fn open_db_rw(path: &Path) -> rusqlite::Result<Connection> {
    open_db(path, OpenFlags::default())
}

/// fsync a file.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// fsync a directory, so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Rename `from` to `to` and make both the file and the rename durable.
pub fn durable_rename(from: &Path, to: &Path) -> std::io::Result<()> {
    sync_file(from)?;
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Write `bytes` to `path` durably (through a temporary file and a rename).
pub fn durable_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    durable_rename(&tmp, path)
}

/// Clone `from` into a new file `to` sharing its blocks (FICLONE). Fails with
/// `Unsupported` where the filesystem cannot (ext4, tmpfs, overlay…).
pub fn reflink(from: &Path, to: &Path) -> std::io::Result<()> {
    let src = File::open(from)?;
    let dst = File::create(to)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // FICLONE = _IOW(0x94, 9, int)
        const FICLONE: libc::c_ulong = 0x4004_9409;
        // SAFETY: both descriptors are open files owned by this function for the call's duration.
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        drop(dst);
        let _ = std::fs::remove_file(to);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("reflink: {err}"),
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop((src, dst));
        let _ = std::fs::remove_file(to);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "reflink needs Linux",
        ))
    }
}

/// sha256 of a file, hex, and its size.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Remove a database file with its WAL and shared-memory files.
pub fn remove_db(path: &Path) -> std::io::Result<()> {
    remove_suffixed(path, &["", "-wal", "-shm"])
}

/// Remove a closed database's WAL and shared-memory files, keeping the database.
pub fn remove_sidecars(path: &Path) -> std::io::Result<()> {
    remove_suffixed(path, &["-wal", "-shm"])
}

fn remove_suffixed(path: &Path, suffixes: &[&str]) -> std::io::Result<()> {
    for suffix in suffixes {
        let p = format!("{}{suffix}", path.display());
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Size of a database with its WAL.
pub fn db_size(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}
