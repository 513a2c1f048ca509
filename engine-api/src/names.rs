//! Names of databases, archives and profiles: validated so that none can leave its directory.

/// A name that could leave its directory or clash with the engine's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {shown:?}: use 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")]
pub struct InvalidName {
    /// What was being named (`database`, `archive`, …).
    pub kind: String,
    /// The name as given, cut to 80 characters.
    pub shown: String,
}

/// The seed database's reserved name.
pub const SEED: &str = "PDB$SEED";

/// Check a database, archive or profile name: 1–63 characters of `a-z 0-9 _ -`,
/// starting with a letter or digit. So no `/`, `..`, NUL, or absolute path can pass.
pub fn validate(kind: &str, name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            kind: kind.to_string(),
            shown: name.chars().take(80).collect(),
        })
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
            assert!(
                err.to_string().starts_with("invalid database name"),
                "{n:?}: {err}"
            );
        }
    }
}
