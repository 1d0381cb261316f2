//! What a node decides about membership besides consensus itself (which
//! is `paxos::Replica`'s): how a leader routes an administrator's change,
//! which change it holds and when it answers it, when a removed node
//! stops, and to whom it still sends. The node (`node/members.rs`,
//! `node/driver.rs`) and the simulator's operator and engine both go
//! through these, so the rules below are the ones that ship and the ones
//! the simulator checks:
//!
//! - **a change shown is answered as made** ([`route`]): a retry whose
//!   first answer was lost never makes a step twice;
//! - **a leader never removes itself**: it hands leadership over, and the
//!   retry reaches the successor;
//! - **one change at a time** ([`AdminChange::take`]): a second, while the
//!   first is neither in effect nor refused, is refused;
//! - **answered once in effect** ([`AdminChange::in_effect`]): only when
//!   the membership deciding the commit index shows it; a leader that
//!   loses the leadership first answers "may or may not be made"
//!   ([`AdminChange::lost_leadership`]) and holds nothing up;
//! - **a removed node stops** ([`RemovalWatch`]): once its removal is in
//!   effect at its commit index, or [`REMOVAL_GRACE`] after it learned the
//!   removal was chosen, whichever is first (until then it still votes on
//!   the slots it decides, which the leader fills at once);
//! - **no message to a removed member** ([`sends_to`]): its id never comes
//!   back, whoever still names it;
//! - **a joining node asks for one step at a time** ([`join_step`]): a
//!   node started with `--join` asks to be added as a learner, then to be
//!   promoted; the leader decides which step from the members in effect,
//!   so an answer lost or a node restarted mid-way never makes a step
//!   twice, and the promotion passes the same catch-up check as an
//!   administrator's.

use crate::paxos::{Membership, MembershipChange, MembershipError, Nanos, NodeId};

/// How long a node whose removal is chosen goes on voting before it stops
/// (see [`RemovalWatch`]).
pub const REMOVAL_GRACE: Nanos = Nanos(3_000_000_000);

/// How the leader handles an administrator's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The members in effect already show it: answer with them.
    AlreadyMade,
    /// The leader is the node to remove: hand leadership over and let the
    /// client retry with the successor.
    HandOver,
    /// Propose it (after the shell's own checks: reachability, the
    /// upgrade gate).
    Propose,
}

/// How leader `me`, with `in_effect` the membership deciding its commit
/// index, handles `change`; the refusal the membership alone gives, before
/// anything is tried (the replica checks again, and the rest).
pub fn route(
    change: MembershipChange,
    me: NodeId,
    in_effect: &Membership,
) -> Result<Route, MembershipError> {
    if in_effect.reflects(change) {
        return Ok(Route::AlreadyMade);
    }
    in_effect.apply(change)?;
    if change == MembershipChange::Remove(me) {
        return Ok(Route::HandOver);
    }
    Ok(Route::Propose)
}

/// The administrator's change a leader holds, with whatever the shell
/// needs to answer it (`T`: the requester's reply channels on a node).
#[derive(Debug)]
pub struct AdminChange<T> {
    pending: Option<(MembershipChange, T)>,
}

impl<T> Default for AdminChange<T> {
    fn default() -> Self {
        AdminChange { pending: None }
    }
}

impl<T> AdminChange<T> {
    /// Holds `change` until it is answered; refused (`ChangeInFlight`),
    /// and `ticket` handed back, while another is held.
    pub fn take(
        &mut self,
        change: MembershipChange,
        ticket: T,
    ) -> Result<(), (MembershipError, T)> {
        if self.pending.is_some() {
            return Err((MembershipError::ChangeInFlight, ticket));
        }
        self.pending = Some((change, ticket));
        Ok(())
    }

    /// The change held, if any.
    pub fn pending(&self) -> Option<MembershipChange> {
        self.pending.as_ref().map(|(change, _)| *change)
    }

    /// The held change's ticket, to update in place.
    pub fn ticket_mut(&mut self) -> Option<&mut T> {
        self.pending.as_mut().map(|(_, ticket)| ticket)
    }

    /// The replica refused the held change: it is answered with the
    /// refusal and held no more.
    pub fn refused(&mut self) -> Option<(MembershipChange, T)> {
        self.pending.take()
    }

    /// The leader lost the leadership: the held change may yet be chosen or
    /// lost under the next leader, which this node cannot tell; it is
    /// answered so, and the next change is not held up by it.
    pub fn lost_leadership(&mut self) -> Option<(MembershipChange, T)> {
        self.pending.take()
    }

    /// The held change, once `in_effect` (the membership deciding the
    /// commit index, published) shows it.
    pub fn in_effect(&mut self, in_effect: &Membership) -> Option<(MembershipChange, T)> {
        self.pending
            .take_if(|(change, _)| in_effect.reflects(*change))
    }
}

/// The part a joining node asks for (a node's `join_as`: `"voter"`, the
/// default, or `"learner"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinAs {
    /// A learner: it receives the log and never votes.
    Learner,
    /// A voter: added as a learner, then promoted once caught up.
    #[default]
    Voter,
}

/// What the leader does with a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStep {
    /// The members in effect already give the node the part it asked for
    /// (a voter asking to be a learner is not demoted).
    Joined,
    /// Make this change (through [`route`] and the shell's checks, as an
    /// administrator's), and let the node ask again for the next step.
    Make(MembershipChange),
}

/// What leader-side step node `node`, listening at `address` and asking to
/// be `wanted`, takes next, given `in_effect`, the membership deciding the
/// leader's commit index: add it as a learner, promote it, or nothing.
/// A removed id is refused ([`MembershipError::Retired`]): it never comes
/// back, whoever asks.
pub fn join_step(
    node: NodeId,
    address: Option<std::net::SocketAddr>,
    wanted: JoinAs,
    in_effect: &Membership,
) -> Result<JoinStep, MembershipError> {
    if in_effect.retired.contains(&node) {
        return Err(MembershipError::Retired);
    }
    if in_effect.voters.contains(&node) {
        return Ok(JoinStep::Joined);
    }
    if !in_effect.learners.contains(&node) {
        return Ok(JoinStep::Make(MembershipChange::AddLearner(node, address)));
    }
    match wanted {
        JoinAs::Learner => Ok(JoinStep::Joined),
        JoinAs::Voter => Ok(JoinStep::Make(MembershipChange::Promote(node))),
    }
}

/// When a removed node stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemovalWatch {
    learned_at: Option<Nanos>,
}

impl RemovalWatch {
    /// Whether node `me` must stop now, at local time `now`: `latest` is
    /// the newest membership it knows chosen, `in_effect` the one deciding
    /// its commit index.
    pub fn must_stop(
        &mut self,
        me: NodeId,
        latest: &Membership,
        in_effect: &Membership,
        now: Nanos,
    ) -> bool {
        if !latest.retired.contains(&me) {
            return false;
        }
        let learned = *self.learned_at.get_or_insert(now);
        in_effect.retired.contains(&me) || now.0.saturating_sub(learned.0) >= REMOVAL_GRACE.0
    }

    /// Whether this node has learned that its removal was chosen.
    pub fn removal_learned(&self) -> bool {
        self.learned_at.is_some()
    }
}

/// Whether a node with `in_effect` the membership deciding its commit
/// index still sends to `to`: never to a member whose removal is in effect
/// (until then it still votes on the slots it decides).
pub fn sends_to(in_effect: &Membership, to: NodeId) -> bool {
    !in_effect.retired.contains(&to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn a_leader_routes_changes_as_the_membership_says() {
        let m = three();
        let me = NodeId(1);
        assert_eq!(
            route(MembershipChange::AddLearner(NodeId(4), None), me, &m),
            Ok(Route::Propose)
        );
        assert_eq!(
            route(MembershipChange::Remove(NodeId(1)), me, &m),
            Ok(Route::HandOver)
        );
        assert_eq!(
            route(MembershipChange::Promote(NodeId(9)), me, &m),
            Err(MembershipError::NotALearner)
        );
        let added = m
            .apply(MembershipChange::AddLearner(NodeId(4), None))
            .expect("adds");
        assert_eq!(
            route(MembershipChange::AddLearner(NodeId(4), None), me, &added),
            Ok(Route::AlreadyMade)
        );
    }

    #[test]
    fn a_joining_node_is_added_then_promoted_one_step_per_request() {
        let node = NodeId(4);
        let wanted = JoinAs::Voter;
        let mut m = three();
        let mut steps = Vec::new();
        while let JoinStep::Make(change) = join_step(node, None, wanted, &m).expect("joins") {
            steps.push(change);
            m = m.apply(change).expect("the step applies");
        }
        assert_eq!(
            steps,
            [
                MembershipChange::AddLearner(node, None),
                MembershipChange::Promote(node)
            ]
        );
        assert!(m.voters.contains(&node));
        // A voter asking to be a learner is not demoted; a learner asking
        // for that part is done.
        assert_eq!(
            join_step(node, None, JoinAs::Learner, &m),
            Ok(JoinStep::Joined)
        );
        let learner = three()
            .apply(MembershipChange::AddLearner(node, None))
            .expect("adds");
        assert_eq!(
            join_step(node, None, JoinAs::Learner, &learner),
            Ok(JoinStep::Joined)
        );
        let removed = m.apply(MembershipChange::Remove(node)).expect("removes");
        assert_eq!(
            join_step(node, None, wanted, &removed),
            Err(MembershipError::Retired)
        );
    }

    #[test]
    fn one_change_is_held_at_a_time_and_answered_once() {
        let mut desk = AdminChange::default();
        let add = MembershipChange::AddLearner(NodeId(4), None);
        assert!(desk.take(add, "first").is_ok());
        let refused = desk.take(MembershipChange::Remove(NodeId(2)), "second");
        assert!(matches!(
            refused,
            Err((MembershipError::ChangeInFlight, "second"))
        ));
        assert_eq!(desk.in_effect(&three()), None, "not yet in effect");
        let added = three().apply(add).expect("adds");
        assert_eq!(desk.in_effect(&added), Some((add, "first")));
        assert_eq!(desk.pending(), None);
        assert!(desk.take(add, "again").is_ok());
        assert_eq!(desk.lost_leadership(), Some((add, "again")));
        assert_eq!(desk.lost_leadership(), None);
    }

    #[test]
    fn a_removed_node_stops_once_in_effect_or_after_the_grace() {
        let m = three();
        let removed = m
            .apply(MembershipChange::Remove(NodeId(3)))
            .expect("removes");
        let me = NodeId(3);
        let mut watch = RemovalWatch::default();
        assert!(!watch.must_stop(me, &m, &m, Nanos(5)));
        assert!(!watch.removal_learned());
        assert!(!watch.must_stop(me, &removed, &m, Nanos(10)));
        assert!(watch.removal_learned());
        assert!(!watch.must_stop(me, &removed, &m, Nanos(10 + REMOVAL_GRACE.0 - 1)));
        assert!(watch.must_stop(me, &removed, &m, Nanos(10 + REMOVAL_GRACE.0)));
        assert!(RemovalWatch::default().must_stop(me, &removed, &removed, Nanos(0)));
        assert!(!sends_to(&removed, me));
        assert!(sends_to(&removed, NodeId(1)));
    }
}
