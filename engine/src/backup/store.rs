//! The object store a tenant's backups go to: S3-compatible, through `object_store`.
//! Every write is a conditional put (never overwrites); the layout is in `docs/backup.md`.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::StoreConfig;

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration cannot make a client.
    #[error("backup store configuration: {0}")]
    Config(String),
    /// The object is not there.
    #[error("not in the backup store: {0}")]
    NotFound(String),
    /// A put found a different object already at that key.
    #[error("backup store already holds a different {0}")]
    Conflict(String),
    /// The store answered with an error or could not be reached.
    #[error("backup store: {0}")]
    Store(String),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StoreError::NotFound(path),
            other => StoreError::Store(other.to_string()),
        }
    }
}

/// A client for one bucket and prefix.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.prefix)
    }
}

impl Store {
    /// A client for `cfg` (credentials from the environment when the config has none).
    pub fn connect(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let key = cfg
            .access_key_id
            .clone()
            .or_else(|| env("TENANTDB_BACKUP_ACCESS_KEY_ID"));
        let secret = cfg
            .secret_access_key
            .clone()
            .or_else(|| env("TENANTDB_BACKUP_SECRET_ACCESS_KEY"));
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(StoreError::Config(
                "no credentials (access key id and secret)".into(),
            ));
        };
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(cfg.endpoint.trim_end_matches('/'))
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_allow_http(cfg.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(s3),
            prefix: cfg.prefix.trim_matches('/').to_string(),
        })
    }

    fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Put `bytes` at `rel` unless something is there; the same size already there counts
    /// as done (a retried put that had succeeded), anything else is a conflict.
    pub async fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&self.key(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                let meta = self.inner.head(&self.key(rel)).await?;
                if meta.size == len {
                    Ok(())
                } else {
                    Err(StoreError::Conflict(rel.to_string()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The object at `rel`.
    pub async fn get(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .inner
            .get(&self.key(rel))
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    /// Keys (relative to the prefix) under `rel/`, sorted.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let base = self.key(rel);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&base))
            .map_ok(|m| m.location.as_ref()[strip..].to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Delete the object at `rel` (absent is fine).
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
