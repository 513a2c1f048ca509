//! The admin tokens the engine accepts: one given at start, or a file of them (one per
//! line) read again when it changes. The operator rotates a token with no restart and no
//! refused call: it adds the new token to the file, switches to it once the engine takes
//! it, then leaves the old one out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arc_swap::ArcSwap;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The file could not be read.
    #[error("reading the admin token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file holds no token: taken as it is, it would lock the operator out (at
    /// start, the engine refuses it; later, the tokens in force stay).
    #[error("the admin token file {0} holds no token")]
    Empty(String),
}

/// The tokens of a file's text: its non-empty lines, trimmed.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// What the admin plane accepts.
#[derive(Debug)]
pub struct AdminTokens {
    tokens: ArcSwap<Vec<String>>,
    file: Option<PathBuf>,
    text: Mutex<String>,
}

fn read(path: &Path) -> Result<(String, Vec<String>), AdminTokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let tokens = parse(&text);
    if tokens.is_empty() {
        return Err(AdminTokenError::Empty(path.display().to_string()));
    }
    Ok((text, tokens))
}

impl AdminTokens {
    /// One token, or none at all (`None` or empty: no admin check, for loopback only).
    pub fn fixed(token: Option<String>) -> Self {
        let tokens = token.filter(|t| !t.trim().is_empty()).into_iter().collect();
        AdminTokens {
            tokens: ArcSwap::from_pointee(tokens),
            file: None,
            text: Mutex::default(),
        }
    }

    /// The tokens of `path`, read again by [`AdminTokens::reload`].
    pub fn from_file(path: PathBuf) -> Result<Self, AdminTokenError> {
        let (text, tokens) = read(&path)?;
        Ok(AdminTokens {
            tokens: ArcSwap::from_pointee(tokens),
            file: Some(path),
            text: Mutex::new(text),
        })
    }

    /// The tokens in force (a standby presents one to its primary, which mounts the same
    /// Secret).
    pub fn tokens(&self) -> Vec<String> {
        self.tokens.load().as_ref().clone()
    }

    /// Whether the admin plane asks for a token at all.
    pub fn required(&self) -> bool {
        !self.tokens.load().is_empty()
    }

    /// Whether `got` is one of the tokens in force (each compared in constant time).
    pub fn accepts(&self, got: &str) -> bool {
        self.tokens.load().iter().fold(false, |ok, want| {
            ok | constant_time_eq(want.as_bytes(), got.as_bytes())
        })
    }

    /// Read the file again; `Ok(true)` when the tokens changed. An empty or unreadable
    /// file leaves the tokens in force as they are.
    pub fn reload(&self) -> Result<bool, AdminTokenError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let (text, tokens) = read(path)?;
        let mut held = self.text.lock().unwrap_or_else(|p| p.into_inner());
        if *held == text {
            return Ok(false);
        }
        self.tokens.store(std::sync::Arc::new(tokens));
        *held = text;
        Ok(true)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_adds_the_new_token_then_drops_the_old_and_an_empty_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-tokens");
        std::fs::write(&path, "old\n").unwrap();
        let t = AdminTokens::from_file(path.clone()).unwrap();
        assert!(t.required() && t.accepts("old") && !t.accepts("new"));
        assert!(!t.reload().unwrap());
        std::fs::write(&path, "old\n  new \n\n").unwrap();
        assert!(t.reload().unwrap());
        assert!(t.accepts("old") && t.accepts("new"));
        std::fs::write(&path, "new\n").unwrap();
        assert!(t.reload().unwrap());
        assert!(!t.accepts("old") && t.accepts("new"));
        std::fs::write(&path, "\n \n").unwrap();
        assert!(matches!(t.reload(), Err(AdminTokenError::Empty(_))));
        assert!(t.accepts("new"), "the tokens in force stay");
        assert!(!t.accepts(""), "never the empty string");
    }

    #[test]
    fn an_empty_file_at_start_is_refused_and_no_token_means_no_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-tokens");
        std::fs::write(&path, "").unwrap();
        assert!(AdminTokens::from_file(path).is_err());
        assert!(!AdminTokens::fixed(None).required());
        assert!(!AdminTokens::fixed(Some(" ".into())).required());
        assert!(AdminTokens::fixed(Some("t".into())).accepts("t"));
    }
}
