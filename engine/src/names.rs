//! Names of databases, archives and profiles: validated so that none can leave its directory.

use crate::error::EngineError;

/// The seed database's reserved name.
pub const SEED: &str = "PDB$SEED";

/// Check a database, archive or profile name: 1–63 characters of `a-z 0-9 _ -`,
/// starting with a letter or digit. So no `/`, `..`, NUL, or absolute path can pass.
pub fn validate(kind: &str, name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(EngineError::BadRequest(format!(
            "invalid {kind} name {shown:?}: use 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["orders", "a", "t-1_x", "0abc", &"a".repeat(63)] {
            assert!(validate("database", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_everything_that_could_escape() {
        let long = "a".repeat(300);
        for n in [
            "",
            "../x",
            "a/b",
            "/etc/passwd",
            "..",
            ".hidden",
            "A",
            "x.db",
            "a\0b",
            "-x",
            "_x",
            &long,
            "ü",
            SEED,
        ] {
            let err = validate("database", n).unwrap_err();
            assert!(matches!(err, EngineError::BadRequest(_)), "{n:?}");
        }
    }
}
