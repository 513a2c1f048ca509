//! Batch step conditions: checked when the batch arrives (they may refer only to earlier
//! steps, and to `is_autocommit` only in Hrana 3), evaluated as the steps run.

use super::error::HranaError;
use super::proto::BatchCond;

/// Whether `cond` holds after the steps so far.
pub(super) fn holds(cond: &BatchCond, ok: &[Option<bool>], autocommit: bool) -> bool {
    match cond {
        BatchCond::Ok { step } => ok.get(*step as usize).copied().flatten() == Some(true),
        BatchCond::Error { step } => ok.get(*step as usize).copied().flatten() == Some(false),
        BatchCond::Not { cond } => !holds(cond, ok, autocommit),
        BatchCond::And { conds } => conds.iter().all(|c| holds(c, ok, autocommit)),
        BatchCond::Or { conds } => conds.iter().any(|c| holds(c, ok, autocommit)),
        BatchCond::IsAutocommit => autocommit,
    }
}

/// A condition that refers only to earlier steps, and to `is_autocommit` only in Hrana 3.
pub(super) fn check_cond(cond: &BatchCond, step: usize, version: u8) -> Result<(), HranaError> {
    match cond {
        BatchCond::Ok { step: s } | BatchCond::Error { step: s } if *s as usize >= step => {
            Err(HranaError::protocol(format!(
                "step {step}'s condition refers to step {s}, which does not run before it"
            )))
        }
        BatchCond::Not { cond } => check_cond(cond, step, version),
        BatchCond::And { conds } | BatchCond::Or { conds } => {
            conds.iter().try_for_each(|c| check_cond(c, step, version))
        }
        BatchCond::IsAutocommit if version < 3 => Err(HranaError::protocol(
            "the is_autocommit condition needs Hrana 3 (v3/pipeline, or the hrana3 subprotocol)",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_evaluate_and_refer_only_backwards() {
        let ok = [Some(true), Some(false), None];
        let c = |j: &str| serde_json::from_str::<BatchCond>(j).unwrap();
        assert!(holds(&c(r#"{"type":"ok","step":0}"#), &ok, true));
        assert!(holds(&c(r#"{"type":"error","step":1}"#), &ok, true));
        assert!(
            !holds(&c(r#"{"type":"ok","step":2}"#), &ok, true),
            "skipped is not ok"
        );
        assert!(
            !holds(&c(r#"{"type":"error","step":2}"#), &ok, true),
            "nor error"
        );
        assert!(holds(
            &c(
                r#"{"type":"and","conds":[{"type":"ok","step":0},{"type":"not","cond":{"type":"ok","step":1}}]}"#
            ),
            &ok,
            true
        ));
        assert!(!holds(&c(r#"{"type":"or","conds":[]}"#), &ok, true));
        assert!(!holds(&c(r#"{"type":"is_autocommit"}"#), &ok, false));
        assert!(check_cond(&c(r#"{"type":"ok","step":3}"#), 3, 3).is_err());
        assert!(check_cond(&c(r#"{"type":"not","cond":{"type":"ok","step":2}}"#), 3, 3).is_ok());
        assert!(check_cond(&c(r#"{"type":"is_autocommit"}"#), 1, 2).is_err());
    }
}
