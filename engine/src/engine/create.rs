//! Making a database: from the seed or an SQL template, as a clone of another (full
//! copy, or a reflink snapshot), or from an archive, always in a scratch file that is
//! renamed into place once the catalog has it.

use super::*;

impl Engine {
    pub(super) fn create_with(
        &self,
        req: CreateRequest,
        restored: Option<PathBuf>,
    ) -> Result<(PdbInfo, bool)> {
        names::validate("database", &req.name)?;
        if let Some(p) = &req.lockdown_profile {
            self.profile(p)?;
        }
        let source = req.source.clone().unwrap_or(Source {
            seed: Some(serde_json::json!({})),
            empty: None,
            clone: None,
            plug: None,
            restore: None,
        });
        let chosen = [
            source.seed.is_some(),
            source.empty.is_some(),
            source.clone.is_some(),
            source.plug.is_some(),
            source.restore.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen != 1 {
            return Err(EngineError::BadRequest(
                "source sets exactly one of seed, empty, clone, plug or restore".into(),
            ));
        }
        let wanted = describe_source(&source);
        if let Ok(existing) = self.get(&req.name) {
            let rec = existing.record();
            return if same_source(&rec.source, &source) {
                Ok((self.info(&existing), false))
            } else {
                Err(EngineError::Conflict(format!(
                    "database {} exists, created from {}; this request asks for {}",
                    req.name,
                    rec.source,
                    describe_request(&source)
                )))
            };
        }
        let tmp = self.tmp_path(&req.name);
        let made = (|| -> Result<String> {
            if source.seed.is_some() {
                std::fs::copy(self.dir.join("seed.db"), &tmp)?;
                Ok(wanted.clone())
            } else if source.empty.is_some() {
                std::fs::copy(self.dir.join("empty.db"), &tmp)?;
                Ok(wanted.clone())
            } else if let Some(c) = &source.clone {
                self.clone_into(c, &tmp)
            } else if let Some(p) = &source.plug {
                self.plug_into(&p.archive, &tmp)?;
                Ok(wanted.clone())
            } else if let Some(file) = &restored {
                std::fs::rename(file, &tmp)?;
                files::remove_sidecars(file)?;
                Ok(wanted.clone())
            } else if source.restore.is_some() {
                Err(EngineError::BadRequest(
                    "a restore is made through the HTTP API (it reads the backup store)".into(),
                ))
            } else {
                Err(EngineError::BadRequest("no source".into()))
            }
        })();
        let used = match made {
            Ok(used) => used,
            Err(e) => {
                let _ = files::remove_db(&tmp);
                return Err(e);
            }
        };
        let path = self.pdb_path(&req.name);
        files::durable_rename(&tmp, &path)?;
        let t = now();
        let rec = PdbRecord {
            name: req.name.clone(),
            open_mode: req.open_mode,
            source: used.clone(),
            storage_quota_bytes: req.storage_quota_bytes,
            lockdown_profile: req.lockdown_profile.clone(),
            created_at: t,
            updated_at: t,
        };
        if let Err(e) = self.catalog.put_pdb(&rec, "created", &used) {
            let _ = files::remove_db(&path);
            return Err(e);
        }
        let pdb = Arc::new(self.handle(path, rec));
        let info = self.info(&pdb);
        self.pdbs
            .write()
            .map_err(EngineError::internal)?
            .insert(req.name, pdb);
        Ok((info, true))
    }

    pub(super) fn clone_into(&self, c: &CloneSource, tmp: &Path) -> Result<String> {
        let src = self.get(&c.from)?;
        match c.mode {
            CloneMode::Full => {
                backup(&src.path, tmp)?;
                Ok(format!("clone full of {}", c.from))
            }
            CloneMode::Snapshot => {
                // Hold the write lock so the file and its WAL are one consistent state.
                let conn = files::open_db(&src.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                let wal = PathBuf::from(format!("{}-wal", src.path.display()));
                let tmp_wal = PathBuf::from(format!("{}-wal", tmp.display()));
                let cloned = files::reflink(&src.path, tmp).and_then(|()| {
                    if wal.exists() {
                        files::reflink(&wal, &tmp_wal)
                    } else {
                        Ok(())
                    }
                });
                conn.execute_batch("ROLLBACK")?;
                drop(conn);
                match cloned {
                    Ok(()) => {
                        // Fold the WAL into the clone so it is one file like every other database.
                        let c2 = files::open_db_rw(tmp)?;
                        c2.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
                        drop(c2);
                        files::remove_sidecars(tmp).ok();
                        Ok(format!("clone snapshot (reflink) of {}", c.from))
                    }
                    Err(e) => {
                        let _ = files::remove_db(tmp);
                        tracing::info!(error = %e, "no reflink here; snapshot falls back to a full copy");
                        backup(&src.path, tmp)?;
                        Ok(format!(
                            "clone snapshot of {} as a full copy (the filesystem cannot reflink)",
                            c.from
                        ))
                    }
                }
            }
            CloneMode::MetadataOnly => {
                std::fs::copy(self.dir.join("empty.db"), tmp)?;
                let from = files::open_live_db_for_reading(&src.path)?;
                let mut stmt = from.prepare("SELECT type, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid")?;
                let ddl: Vec<String> = stmt
                    .query_map([], |r| r.get::<_, String>(1))?
                    .collect::<Result<_, _>>()?;
                let version: i64 = from.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let mut to = files::open_db_rw(tmp)?;
                let tx = to.transaction()?;
                for sql in &ddl {
                    tx.execute_batch(sql)?;
                }
                tx.pragma_update(None, "user_version", version)?;
                tx.commit()?;
                to.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
                Ok(format!("clone metadataOnly of {}", c.from))
            }
        }
    }
}
