//! What a member agent does on each tick, decided from what it sees: the tenant's Lease
//! and its own engine. Pure, so every rule of election and fencing is tested here.

use tenantdb_engine_api::replication::Role;

/// The Lease as the agent read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// Holder (a pod name); `None` when free.
    pub holder: Option<String>,
    /// Transitions: the epoch of the holder.
    pub epoch: u64,
    /// The member that held it last (kept when it is released).
    pub last_primary: Option<String>,
    /// Whether this agent has seen it unchanged for a whole lease duration.
    pub expired: bool,
    /// A switchover asked for (`kubectl tenantdb promote`): the member to hand over to.
    pub handover_to: Option<String>,
}

/// The engine as the agent reached it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineView {
    /// Answered at all.
    pub reachable: bool,
    /// Refused the connection: the process is gone (it cannot acknowledge anything).
    pub gone: bool,
    /// Role in force (`None`: waiting for one, as after a restart).
    pub role: Option<Role>,
    /// Newest epoch it has seen.
    pub epoch: u64,
    /// Standby: has applied everything its primary had when it last said so.
    pub caught_up: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Renew the Lease, then extend the engine's right to acknowledge.
    Renew,
    /// Take the free or expired Lease as epoch `epoch + 1`, then promote the engine.
    Acquire,
    /// Give the Lease up at once: this member's engine cannot be primary (it died or
    /// restarted), so a standby need not wait for the Lease to expire.
    Release,
    /// Switchover: stop acknowledging, wait until the standbys have every commit, then
    /// free the Lease for the member it is handed to.
    HandOver,
    /// Follow `holder` (a standby), or step down if this engine is primary.
    Follow(String),
    /// Nothing now.
    Wait,
}

/// Decide for member `me` (`first`: ordinal 0, the one that starts a tenant that has
/// never had a primary, whose volume holds the data of a tenant scaled up from one).
pub fn decide(me: &str, first: bool, lease: &LeaseView, engine: &EngineView) -> Action {
    match lease.holder.as_deref() {
        Some(h) if h == me => {
            let handing = lease.handover_to.as_deref().is_some_and(|to| to != me);
            if engine.role == Some(Role::Primary) && engine.reachable && handing {
                Action::HandOver
            } else if engine.role == Some(Role::Primary) && engine.reachable {
                Action::Renew
            } else if engine.gone || (engine.reachable && engine.role != Some(Role::Primary)) {
                Action::Release
            } else {
                // Not answering (frozen, overloaded): renew nothing; its own deadline
                // fences it, and the Lease expires for the others.
                Action::Wait
            }
        }
        Some(h) if !lease.expired => Action::Follow(h.to_string()),
        _ => {
            if eligible(me, first, lease, engine) {
                Action::Acquire
            } else {
                Action::Wait
            }
        }
    }
}

/// Whether this member may take a free Lease: a reachable engine that holds every
/// transaction the last primary acknowledged. A caught-up standby of the last epoch
/// does; so does the last primary itself (its own files hold all it acknowledged), and
/// the first member of a tenant that never had one.
fn eligible(me: &str, first: bool, lease: &LeaseView, engine: &EngineView) -> bool {
    if !engine.reachable || lease.handover_to.as_deref().is_some_and(|to| to != me) {
        return false;
    }
    match engine.role {
        Some(Role::Standby) => engine.caught_up && engine.epoch >= lease.epoch,
        Some(Role::Primary) => lease.last_primary.as_deref() == Some(me),
        None => match lease.last_primary.as_deref() {
            Some(last) => last == me,
            None => first && lease.epoch == 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, epoch: u64, last: Option<&str>, expired: bool) -> LeaseView {
        LeaseView {
            holder: holder.map(String::from),
            epoch,
            last_primary: last.map(String::from),
            expired,
            handover_to: None,
        }
    }

    fn engine(role: Option<Role>, epoch: u64, caught_up: bool) -> EngineView {
        EngineView {
            reachable: true,
            gone: false,
            role,
            epoch,
            caught_up,
        }
    }

    const GONE: EngineView = EngineView {
        reachable: false,
        gone: true,
        role: None,
        epoch: 0,
        caught_up: false,
    };

    #[test]
    fn the_first_member_starts_a_new_tenant_and_the_others_wait() {
        let free = lease(None, 0, None, false);
        assert_eq!(
            decide("t-0", true, &free, &engine(None, 0, false)),
            Action::Acquire
        );
        assert_eq!(
            decide("t-1", false, &free, &engine(None, 0, false)),
            Action::Wait
        );
    }

    #[test]
    fn a_primary_renews_and_releases_when_its_engine_died_or_restarted() {
        let mine = lease(Some("t-0"), 1, Some("t-0"), false);
        assert_eq!(
            decide("t-0", true, &mine, &engine(Some(Role::Primary), 1, true)),
            Action::Renew
        );
        assert_eq!(decide("t-0", true, &mine, &GONE), Action::Release);
        assert_eq!(
            decide("t-0", true, &mine, &engine(None, 1, false)),
            Action::Release
        );
        let frozen = EngineView::default();
        assert_eq!(
            decide("t-0", true, &mine, &frozen),
            Action::Wait,
            "no renewal, no release"
        );
    }

    #[test]
    fn a_standby_follows_a_live_holder_and_takes_over_only_caught_up() {
        let held = lease(Some("t-0"), 3, Some("t-0"), false);
        let standby = engine(Some(Role::Standby), 3, true);
        assert_eq!(
            decide("t-1", false, &held, &standby),
            Action::Follow("t-0".into())
        );
        let released = lease(None, 3, Some("t-0"), false);
        assert_eq!(decide("t-1", false, &released, &standby), Action::Acquire);
        let expired = lease(Some("t-0"), 3, Some("t-0"), true);
        assert_eq!(decide("t-1", false, &expired, &standby), Action::Acquire);
        let behind = engine(Some(Role::Standby), 3, false);
        assert_eq!(decide("t-1", false, &released, &behind), Action::Wait);
        let older = engine(Some(Role::Standby), 2, true);
        assert_eq!(decide("t-1", false, &released, &older), Action::Wait);
        assert_eq!(decide("t-1", false, &released, &GONE), Action::Wait);
    }

    #[test]
    fn a_restarted_member_takes_over_only_if_it_was_the_last_primary() {
        let released = lease(None, 3, Some("t-0"), false);
        assert_eq!(
            decide("t-0", true, &released, &engine(None, 0, false)),
            Action::Acquire
        );
        assert_eq!(
            decide("t-1", false, &released, &engine(None, 0, false)),
            Action::Wait
        );
        // The first member does not start a tenant that had a primary.
        let had = lease(None, 3, Some("t-1"), false);
        assert_eq!(
            decide("t-0", true, &had, &engine(None, 0, false)),
            Action::Wait
        );
    }

    #[test]
    fn a_switchover_hands_the_lease_to_the_member_named_and_no_other() {
        let mut asked = lease(Some("t-0"), 2, Some("t-0"), false);
        asked.handover_to = Some("t-2".into());
        let primary = engine(Some(Role::Primary), 2, true);
        assert_eq!(decide("t-0", true, &asked, &primary), Action::HandOver);
        let mut freed = lease(None, 2, Some("t-0"), false);
        freed.handover_to = Some("t-2".into());
        let standby = engine(Some(Role::Standby), 2, true);
        assert_eq!(decide("t-1", false, &freed, &standby), Action::Wait);
        assert_eq!(decide("t-2", false, &freed, &standby), Action::Acquire);
    }

    #[test]
    fn a_deposed_primary_is_told_to_follow() {
        let taken = lease(Some("t-1"), 4, Some("t-1"), false);
        assert_eq!(
            decide("t-0", true, &taken, &engine(Some(Role::Primary), 3, true)),
            Action::Follow("t-1".into())
        );
    }
}
