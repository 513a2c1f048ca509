//! Unplugging a database into an archive, plugging one back, and the archives the
//! engine keeps.

use super::*;

impl Engine {
    /// Unplug a database into an archive (manifest + data + sha256) and unregister it.
    pub fn unplug(&self, name: &str, archive: Option<String>) -> Result<Manifest> {
        let pdb = self.get(name)?;
        let archive = archive.unwrap_or_else(|| format!("{name}-{}", now()));
        names::validate("archive", &archive)?;
        if self.catalog.archive(&archive)?.is_some() {
            return Err(EngineError::Conflict(format!("archive {archive} exists")));
        }
        self.streams.end_for(name, true);
        pdb.close_sessions(true, self.opts.close_deadline)?;
        self.update(&pdb, "closed", "for unplug", |r| r.open_mode = None)?;
        self.flush_pdbs(std::slice::from_ref(&pdb))?;
        self.finish_backup(name);
        checkpoint(&pdb.path)?;
        let dir = self.dir.join("archives").join(&archive);
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data.db");
        std::fs::copy(&pdb.path, &data)?;
        files::sync_file(&data)?;
        let manifest = self.register_archive(&archive, name, &dir)?;
        self.pdbs
            .write()
            .map_err(EngineError::internal)?
            .remove(name);
        self.forget_tokens_of(name)?;
        self.catalog.remove_pdb(name, "unplugged", &manifest.name)?;
        files::remove_db(&pdb.path)?;
        Ok(manifest)
    }

    /// Write the manifest of the data in `dir/data.db` and record the archive in the catalog.
    pub(super) fn register_archive(
        &self,
        archive: &str,
        database: &str,
        dir: &Path,
    ) -> Result<Manifest> {
        let data = dir.join("data.db");
        let (sha256, size) = files::sha256_file(&data)?;
        let schema_version: i64 = files::open_db(&data, OpenFlags::SQLITE_OPEN_READ_ONLY)?
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let manifest = Manifest {
            format: ARCHIVE_FORMAT.into(),
            name: archive.into(),
            database: database.into(),
            schema_version,
            sqlite_version: rusqlite::version().into(),
            size_bytes: size,
            sha256: sha256.clone(),
            created_at: now(),
        };
        files::durable_write(
            &dir.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest).map_err(EngineError::internal)?,
        )?;
        files::sync_dir(dir)?;
        self.catalog.put_archive(&ArchiveRecord {
            name: archive.into(),
            database: database.into(),
            sha256,
            size_bytes: size,
            created_at: manifest.created_at,
        })?;
        Ok(manifest)
    }

    /// An archive's manifest and the path of its data, to send it to another engine.
    pub fn archive_data(&self, archive: &str) -> Result<(Manifest, PathBuf)> {
        let manifest = self.archive_manifest(archive)?;
        Ok((
            manifest,
            self.dir.join("archives").join(archive).join("data.db"),
        ))
    }

    /// A new file under `tmp/` to receive archive `archive` into.
    pub fn receive_path(&self, archive: &str) -> Result<PathBuf> {
        names::validate("archive", archive)?;
        Ok(self.tmp_path(archive))
    }

    /// Register the data received into `received` (from [`Engine::receive_path`]) as
    /// archive `archive` of database `database`. The data must have sha256 `sha256` and be
    /// a sound SQLite database; otherwise nothing is registered and the file is removed.
    /// Receiving the same archive again is a no-op; other data under its name is a conflict.
    pub fn import_archive(
        &self,
        archive: &str,
        database: &str,
        sha256: &str,
        received: &Path,
    ) -> Result<Manifest> {
        let result = (|| {
            names::validate("archive", archive)?;
            names::validate("database", database)?;
            if let Some(existing) = self.catalog.archive(archive)? {
                return if existing.sha256 == sha256 {
                    self.archive_manifest(archive)
                } else {
                    Err(EngineError::Conflict(format!(
                        "archive {archive} exists with other content (sha256 {})",
                        existing.sha256
                    )))
                };
            }
            let check = |path: &Path| -> Result<String> {
                let conn = files::open_db(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)));
                conn.map_err(|e| {
                    EngineError::BadRequest(format!("archive {archive} is not a database: {e}"))
                })
            };
            let ok = check(received)?;
            files::remove_sidecars(received)?;
            if ok != "ok" {
                return Err(EngineError::BadRequest(format!(
                    "archive {archive} holds a damaged database: {ok}"
                )));
            }
            let (sha, size) = files::sha256_file(received)?;
            if sha != sha256 {
                return Err(EngineError::BadRequest(format!(
                    "archive {archive} failed verification: received {size} bytes with sha256 {sha}, the sender said {sha256}"
                )));
            }
            let dir = self.dir.join("archives").join(archive);
            std::fs::create_dir_all(&dir)?;
            files::durable_rename(received, &dir.join("data.db"))?;
            self.register_archive(archive, database, &dir)
        })();
        let _ = files::remove_db(received);
        result
    }

    /// Delete an archive and its files.
    pub fn delete_archive(&self, archive: &str) -> Result<()> {
        names::validate("archive", archive)?;
        let dir = self.dir.join("archives").join(archive);
        let known = self.catalog.delete_archive(archive)?;
        let present = dir.exists();
        if present {
            std::fs::remove_dir_all(&dir)?;
            files::sync_dir(&self.dir.join("archives"))?;
        }
        if !known && !present {
            return Err(EngineError::NotFound(format!("no archive named {archive}")));
        }
        Ok(())
    }

    /// Verify an archive and copy its data to `tmp`; nothing is registered here.
    pub(super) fn plug_into(&self, archive: &str, tmp: &Path) -> Result<()> {
        names::validate("archive", archive)?;
        let dir = self.dir.join("archives").join(archive);
        let manifest = self.archive_manifest(archive)?;
        let data = dir.join("data.db");
        let (sha, size) = files::sha256_file(&data).map_err(|e| {
            EngineError::BadRequest(format!("archive {archive} has no readable data: {e}"))
        })?;
        if sha != manifest.sha256 || size != manifest.size_bytes {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} failed verification: data is {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}",
                manifest.size_bytes, manifest.sha256
            )));
        }
        std::fs::copy(&data, tmp)?;
        let ok: String =
            files::open_db_rw(tmp)?.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} holds a damaged database: {ok}"
            )));
        }
        Ok(())
    }

    /// An archive's manifest, checked for format.
    pub fn archive_manifest(&self, archive: &str) -> Result<Manifest> {
        names::validate("archive", archive)?;
        let path = self
            .dir
            .join("archives")
            .join(archive)
            .join("manifest.json");
        let text = std::fs::read(&path)
            .map_err(|_| EngineError::NotFound(format!("no archive named {archive}")))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            EngineError::BadRequest(format!("archive {archive} has an unreadable manifest: {e}"))
        })?;
        if m.format != ARCHIVE_FORMAT {
            return Err(EngineError::BadRequest(format!(
                "archive {archive} is format {:?}, this engine reads {ARCHIVE_FORMAT}",
                m.format
            )));
        }
        Ok(m)
    }

    /// A database's history, oldest first: (event, detail, unix seconds).
    pub fn history(&self, name: &str) -> Result<Vec<(String, String, i64)>> {
        self.catalog.history(name)
    }

    /// Every archive.
    pub fn archives(&self) -> Result<Vec<ArchiveRecord>> {
        self.catalog.archives()
    }
}
