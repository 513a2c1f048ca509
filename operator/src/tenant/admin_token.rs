//! Pure: rotating a tenant's admin token without a restart and without a refused call.
//! The engine reads its accepted tokens from the credentials Secret mounted as a file
//! (`admin-tokens`, one per line) and re-reads it when the kubelet updates it. A rotation
//! (asked for with the Tenant annotation [`ROTATE_ANNOTATION`]) goes:
//! 1. the new token joins the file beside the old (`next-admin-token` holds it);
//! 2. once the engine accepts the new token, the operator presents it (`admin-token`) and
//!    the file holds it alone, so the old one stops working at the next re-read.

use std::collections::BTreeMap;

use super::build::ADMIN_TOKEN_KEY;

/// Key of the tokens the engine accepts, one per line (the file it reads).
pub const ACCEPTED_KEY: &str = "admin-tokens";
/// Key of the token being rotated in, while the engine does not take it yet.
pub const NEXT_KEY: &str = "next-admin-token";
/// Tenant annotation asking for a rotation: any new value starts one.
pub const ROTATE_ANNOTATION: &str = "tenantdb.io/rotate-admin-token";
/// Keys earlier versions wrote and nothing reads (an admin user and a password the
/// engine never took); they are removed.
pub const OBSOLETE_KEYS: [&str; 2] = ["admin-user", "admin-password"];
/// Credentials Secret annotation: the rotation request last carried out.
pub const ROTATED_ANNOTATION: &str = "tenantdb.io/admin-token-rotated-for";

/// What to do with the credentials Secret now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStep {
    /// Nothing.
    Steady,
    /// Set these keys (`None`: remove the key), and record the rotation request handled.
    Write {
        /// Keys to set or remove.
        keys: BTreeMap<&'static str, Option<String>>,
        /// The request this write carries out, for [`ROTATED_ANNOTATION`].
        rotated_for: Option<String>,
    },
    /// Ask the engine whether it takes this token yet.
    Probe(String),
}

/// The next step, from the Secret's keys, the rotation last carried out and the one asked
/// for, whether the engine took the next token (`next_accepted`), and a fresh random
/// token to use if a rotation starts.
pub fn step(
    data: &BTreeMap<String, String>,
    rotated_for: Option<&str>,
    requested: Option<&str>,
    next_accepted: bool,
    fresh: &str,
) -> TokenStep {
    let current = data.get(ADMIN_TOKEN_KEY).map(|t| t.trim().to_string());
    let Some(current) = current.filter(|t| !t.is_empty()) else {
        return TokenStep::Steady;
    };
    if let Some(next) = data.get(NEXT_KEY).filter(|t| !t.trim().is_empty()) {
        if !next_accepted {
            return TokenStep::Probe(next.clone());
        }
        return TokenStep::Write {
            keys: BTreeMap::from([
                (ADMIN_TOKEN_KEY, Some(next.clone())),
                (ACCEPTED_KEY, Some(format!("{next}\n"))),
                (NEXT_KEY, None),
            ]),
            rotated_for: None,
        };
    }
    if let Some(r) = requested.filter(|r| Some(*r) != rotated_for) {
        return TokenStep::Write {
            keys: BTreeMap::from([
                (ACCEPTED_KEY, Some(format!("{current}\n{fresh}\n"))),
                (NEXT_KEY, Some(fresh.to_string())),
            ]),
            rotated_for: Some(r.to_string()),
        };
    }
    // A Secret from before token files (or edited by hand): the file gets the token, and
    // what nothing reads goes.
    let mut keys: BTreeMap<&'static str, Option<String>> = OBSOLETE_KEYS
        .into_iter()
        .filter(|k| data.contains_key(*k))
        .map(|k| (k, None))
        .collect();
    let accepted = data
        .get(ACCEPTED_KEY)
        .map(String::as_str)
        .unwrap_or_default();
    if !accepted.lines().any(|l| l.trim() == current) {
        keys.insert(ACCEPTED_KEY, Some(format!("{current}\n")));
    }
    if keys.is_empty() {
        return TokenStep::Steady;
    }
    TokenStep::Write {
        keys,
        rotated_for: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(data: &mut BTreeMap<String, String>, s: &TokenStep) {
        if let TokenStep::Write { keys, .. } = s {
            for (k, v) in keys {
                match v {
                    Some(v) => data.insert(k.to_string(), v.clone()),
                    None => data.remove(*k),
                };
            }
        }
    }

    #[test]
    fn a_rotation_adds_then_switches_then_drops_the_old_token() {
        let mut data = BTreeMap::from([
            (ADMIN_TOKEN_KEY.to_string(), "old".to_string()),
            (ACCEPTED_KEY.to_string(), "old\n".to_string()),
        ]);
        assert_eq!(step(&data, None, None, false, "new"), TokenStep::Steady);
        let start = step(&data, None, Some("1"), false, "new");
        assert!(matches!(&start, TokenStep::Write { rotated_for: Some(r), .. } if r == "1"));
        apply(&mut data, &start);
        assert_eq!(
            data[ACCEPTED_KEY], "old\nnew\n",
            "both work while the engine catches up"
        );
        assert_eq!(
            data[ADMIN_TOKEN_KEY], "old",
            "the operator keeps presenting the old one"
        );
        // Until the engine takes it, the operator only asks.
        assert_eq!(
            step(&data, Some("1"), Some("1"), false, "x"),
            TokenStep::Probe("new".into())
        );
        let switch = step(&data, Some("1"), Some("1"), true, "x");
        apply(&mut data, &switch);
        assert_eq!(data[ADMIN_TOKEN_KEY], "new");
        assert_eq!(data[ACCEPTED_KEY], "new\n");
        assert!(!data.contains_key(NEXT_KEY));
        // The same request is not carried out twice; a new value rotates again.
        assert_eq!(
            step(&data, Some("1"), Some("1"), false, "x"),
            TokenStep::Steady
        );
        assert!(matches!(
            step(&data, Some("1"), Some("2"), false, "x"),
            TokenStep::Write { .. }
        ));
    }

    #[test]
    fn a_secret_without_a_token_file_gets_one_and_a_secret_without_a_token_is_left() {
        let mut data = BTreeMap::from([
            (ADMIN_TOKEN_KEY.to_string(), "tok".to_string()),
            ("admin-password".to_string(), "pw".to_string()),
        ]);
        let s = step(&data, None, None, false, "x");
        apply(&mut data, &s);
        assert_eq!(data[ACCEPTED_KEY], "tok\n");
        assert!(
            !data.contains_key("admin-password"),
            "the unused password goes"
        );
        assert_eq!(step(&data, None, None, false, "x"), TokenStep::Steady);
        assert_eq!(
            step(&BTreeMap::new(), None, Some("1"), false, "x"),
            TokenStep::Steady
        );
    }
}
