//! Who takes part in consensus, slot by slot.
//!
//! Membership is replicated state: a change is a log entry chosen like any
//! command, and it takes effect [`MEMBERSHIP_DELAY_SLOTS`] slots after the
//! slot that carries it (Lamport's alpha, "Paxos Made Simple" section 3 and
//! "Reconfiguring a State Machine", 2010). Which acceptors decide slot `s`
//! is therefore a function of the values chosen at slots up to
//! `s - MEMBERSHIP_DELAY_SLOTS`, and a replica only proposes at a slot
//! whose earlier slots up to that distance it knows chosen (the replica's
//! rule "lead only within alpha"): every proposer of a slot agrees on its
//! acceptors, and each slot is single-decree Paxos over a fixed set.
//!
//! A change is one of: add a learner (it receives the log but does not
//! vote), promote a learner to voter, remove a member. Each changes the
//! voters by at most one, and a leader has at most one change in flight
//! (proposed and not yet in effect): the next is refused until then.
//!
//! The change travels as an ordinary log value with a header no client
//! command can have (an origin node id of `u64::MAX`, which no node has),
//! so the log, the peer protocol and the storage carry it unchanged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use super::types::{NodeId, Slot, Value};

/// How many slots after the slot that carries it a membership change takes
/// effect (Lamport's alpha). A protocol constant: every replica must use
/// the same, so it is not configurable. A leader never has more slots in
/// flight past its commit index than this.
pub const MEMBERSHIP_DELAY_SLOTS: u64 = 16;

/// Most voters a membership may hold (a quorum of 8 is slow enough).
pub const MAX_VOTERS: usize = 15;

/// Most learners a membership may hold at once.
pub const MAX_LEARNERS: usize = 8;

/// Most membership epochs a replica keeps (the one in effect at its
/// snapshot point and every later one). One change at a time, each taking
/// [`MEMBERSHIP_DELAY_SLOTS`], keeps the real number at a handful.
pub const MAX_EPOCHS: usize = 1024;

/// The largest membership change's log value (a learner added with an
/// IPv6 address); `max_value_bytes` must hold it.
pub const CHANGE_VALUE_BYTES: usize = 25 + 1 + 16 + 2;

/// The header of a membership change value: eight `0xff` bytes (the
/// envelope's origin node id, `u64::MAX`, which no node has) and a tag.
const CHANGE_MAGIC: &[u8; 16] = b"\xff\xff\xff\xff\xff\xff\xff\xffpxmember";
/// The header of a snapshot that carries membership epochs, with their
/// members' addresses, before the application's bytes. An application
/// snapshot never starts with it (a snapshot without it is one from before
/// membership was replicated).
const SNAPSHOT_MAGIC: &[u8; 8] = b"pxsnapm2";
/// The same header as written before members' addresses were replicated
/// (read, never written).
const SNAPSHOT_MAGIC_NO_ADDRESSES: &[u8; 8] = b"pxsnapm1";

/// One membership change, as the log carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new node receives the log, without a vote, until promoted. The
    /// address is where its peers reach it (`None`: from their
    /// configuration, as for the first voters).
    AddLearner(NodeId, Option<SocketAddr>),
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A voter or learner leaves for good; its id is never used again.
    Remove(NodeId),
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            MembershipChange::AddLearner(n, _)
            | MembershipChange::Promote(n)
            | MembershipChange::Remove(n) => *n,
        }
    }

    /// The log value carrying this change.
    pub fn encode(&self) -> Value {
        let (kind, node) = match self {
            MembershipChange::AddLearner(n, _) => (1u8, n.0),
            MembershipChange::Promote(n) => (2, n.0),
            MembershipChange::Remove(n) => (3, n.0),
        };
        let mut out = Vec::with_capacity(CHANGE_VALUE_BYTES);
        out.extend_from_slice(CHANGE_MAGIC);
        out.push(kind);
        out.extend_from_slice(&node.to_le_bytes());
        if let MembershipChange::AddLearner(_, Some(address)) = self {
            encode_address(address, &mut out);
        }
        debug_assert!(out.len() <= CHANGE_VALUE_BYTES);
        Value::from(out)
    }

    /// The change a log value carries, if it is one; `None` for every
    /// client command and for a malformed change (which the state machine
    /// must then ignore too: see [`is_membership_value`]).
    pub fn decode(value: &[u8]) -> Option<MembershipChange> {
        let mut rest = value.strip_prefix(CHANGE_MAGIC.as_slice())?;
        let [kind] = take(&mut rest)?;
        let node = NodeId(u64::from_le_bytes(take(&mut rest)?));
        let change = match kind {
            // Without an address: as written before addresses were
            // replicated.
            1 if rest.is_empty() => MembershipChange::AddLearner(node, None),
            1 => MembershipChange::AddLearner(node, Some(decode_address(&mut rest)?)),
            2 => MembershipChange::Promote(node),
            3 => MembershipChange::Remove(node),
            _ => return None,
        };
        rest.is_empty().then_some(change)
    }
}

/// Whether a log value is consensus' own (a membership change, possibly
/// malformed) rather than an application command. The application skips
/// such values.
pub fn is_membership_value(value: &[u8]) -> bool {
    value.starts_with(CHANGE_MAGIC)
}

/// Takes `N` bytes off the front of `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_at_checked(N)?;
    *bytes = rest;
    head.try_into().ok()
}

/// Appends `address`: its family (4 or 6), its IP, its port.
fn encode_address(address: &SocketAddr, out: &mut Vec<u8>) {
    match address.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&address.port().to_le_bytes());
}

/// Reads what [`encode_address`] wrote.
fn decode_address(bytes: &mut &[u8]) -> Option<SocketAddr> {
    let ip = match take::<1>(bytes)? {
        [4] => IpAddr::from(take::<4>(bytes)?),
        [6] => IpAddr::from(take::<16>(bytes)?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_le_bytes(take(bytes)?)))
}

/// Why a membership change was refused. Nothing is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipError {
    /// The id is outside 1..=[`NodeId::MAX`].
    BadId,
    /// The node is already a voter or learner.
    AlreadyMember,
    /// The id belonged to a removed member; ids are never reused.
    Retired,
    /// Only a learner can be promoted.
    NotALearner,
    /// The node is not a member.
    NotAMember,
    /// The last voter cannot be removed.
    LastVoter,
    /// The membership would exceed [`MAX_VOTERS`] or [`MAX_LEARNERS`].
    TooMany,
    /// Another change is proposed and not yet in effect.
    ChangeInFlight,
    /// The learner is too far behind the leader to be promoted.
    LearnerBehind,
    /// The leader cannot remove itself; it must hand leadership over first.
    RemovesLeader,
    /// The voters after the change that answer the leader would be fewer
    /// than a majority of them: the cluster would stop.
    WouldLoseQuorum,
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            MembershipError::BadId => "node ids run from 1 to 1023",
            MembershipError::AlreadyMember => "the node is already a member",
            MembershipError::Retired => {
                "the id belonged to a removed member and is never reused: give the node a new id"
            }
            MembershipError::NotALearner => "only a learner can be promoted: add it first",
            MembershipError::NotAMember => "the node is not a member",
            MembershipError::LastVoter => "the last voter cannot be removed",
            MembershipError::TooMany => "the membership would exceed 15 voters or 8 learners",
            MembershipError::ChangeInFlight => {
                "another membership change is in flight: wait until it is in effect and retry"
            }
            MembershipError::LearnerBehind => {
                "the learner has not caught up with the leader yet: wait and retry"
            }
            MembershipError::RemovesLeader => {
                "the leader cannot remove itself: hand leadership over first"
            }
            MembershipError::WouldLoseQuorum => {
                "fewer than a majority of the voters after the change answer the leader: \
                 bring members back, or add and promote new ones, first"
            }
        };
        f.write_str(text)
    }
}

impl std::error::Error for MembershipError {}

/// The members deciding one stretch of slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Acceptors whose votes count: a majority of them chooses a value.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log and vote on nothing.
    pub learners: BTreeSet<NodeId>,
    /// Ids of removed members, never admitted again.
    pub retired: BTreeSet<NodeId>,
    /// Where members added with an address are reached (the first voters
    /// are reached at the addresses their peers are configured with).
    pub addresses: BTreeMap<NodeId, SocketAddr>,
}

impl Membership {
    /// The first membership of a cluster: these voters, nothing else.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the voters among `nodes` make a majority.
    pub fn is_quorum<'a>(&self, nodes: impl IntoIterator<Item = &'a NodeId>) -> bool {
        nodes
            .into_iter()
            .filter(|n| self.voters.contains(n))
            .count()
            >= self.quorum()
    }

    /// Whether `node` is a voter or a learner.
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Voters and learners, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// Whether `change` shows in this membership: the node added (a
    /// learner or, since, a voter), promoted, or removed.
    pub fn reflects(&self, change: MembershipChange) -> bool {
        match change {
            MembershipChange::AddLearner(n, _) => self.contains(n),
            MembershipChange::Promote(n) => self.voters.contains(&n),
            MembershipChange::Remove(n) => self.retired.contains(&n),
        }
    }

    /// The membership after `change`, or why it cannot be made.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let node = change.node();
        if node.0 == 0 || node.0 > NodeId::MAX {
            return Err(MembershipError::BadId);
        }
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(_, address) => {
                if self.retired.contains(&node) {
                    return Err(MembershipError::Retired);
                }
                if self.contains(node) {
                    return Err(MembershipError::AlreadyMember);
                }
                if self.learners.len() >= MAX_LEARNERS {
                    return Err(MembershipError::TooMany);
                }
                next.learners.insert(node);
                if let Some(address) = address {
                    next.addresses.insert(node, address);
                }
            }
            MembershipChange::Promote(_) => {
                if !self.learners.contains(&node) {
                    return Err(MembershipError::NotALearner);
                }
                if self.voters.len() >= MAX_VOTERS {
                    return Err(MembershipError::TooMany);
                }
                next.learners.remove(&node);
                next.voters.insert(node);
            }
            MembershipChange::Remove(_) => {
                if !self.contains(node) {
                    return Err(MembershipError::NotAMember);
                }
                if self.voters.len() == 1 && self.voters.contains(&node) {
                    return Err(MembershipError::LastVoter);
                }
                next.voters.remove(&node);
                next.learners.remove(&node);
                next.addresses.remove(&node);
                next.retired.insert(node);
            }
        }
        Ok(next)
    }
}

/// One membership and the first slot it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The first slot this membership decides.
    pub from: Slot,
    /// The membership.
    pub members: Membership,
}

/// The memberships of a stretch of the log: the one in effect at its start
/// and every change chosen after, each from the slot it takes effect.
/// Changes are added in slot order as they become known chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipLog {
    /// Ascending `from`; never empty.
    epochs: VecDeque<Epoch>,
}

impl MembershipLog {
    /// A log whose every slot is decided by `members`.
    pub fn new(members: Membership) -> MembershipLog {
        MembershipLog {
            epochs: VecDeque::from([Epoch {
                from: Slot(0),
                members,
            }]),
        }
    }

    /// The membership deciding `slot` (as far as changes are known: exact
    /// for a slot whose earlier slots up to [`MEMBERSHIP_DELAY_SLOTS`] are
    /// all known chosen).
    pub fn at(&self, slot: Slot) -> &Membership {
        let i = self.epochs.partition_point(|e| e.from <= slot);
        &self.epochs[i.saturating_sub(1)].members
    }

    /// The membership after every known change (possibly not in effect yet).
    pub fn latest(&self) -> &Membership {
        // Never empty: built with one epoch, trimmed to at least one.
        &self.epochs[self.epochs.len() - 1].members
    }

    /// The memberships deciding `slot` and every later slot.
    pub fn from_slot(&self, slot: Slot) -> impl Iterator<Item = &Membership> {
        let i = self.epochs.partition_point(|e| e.from <= slot);
        self.epochs.range(i.saturating_sub(1)..).map(|e| &e.members)
    }

    /// The first slot a membership not yet in effect at `slot` takes over,
    /// if any is known.
    pub fn next_change_after(&self, slot: Slot) -> Option<Slot> {
        self.epochs.iter().map(|e| e.from).find(|from| *from > slot)
    }

    #[cfg(test)]
    fn since_for_tests(&self, slot: Slot) -> MembershipLog {
        let mut out = self.clone();
        out.trim_before(slot);
        out
    }

    /// The epochs, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = &Epoch> {
        self.epochs.iter()
    }

    /// A change chosen at `slot`: from `slot + MEMBERSHIP_DELAY_SLOTS` the
    /// membership is the latest one changed by it. A change the latest
    /// membership refuses (a leader checks before proposing, so only a
    /// change raced by another can be refused) changes nothing: every
    /// replica refuses it alike, since every one adds the changes in slot
    /// order, each once. One at or below a slot already added is ignored
    /// (`Ok`): it is in this log already.
    pub fn on_chosen(
        &mut self,
        slot: Slot,
        change: MembershipChange,
    ) -> Result<(), MembershipError> {
        let from = Slot(slot.0.saturating_add(MEMBERSHIP_DELAY_SLOTS));
        if self.epochs.back().is_some_and(|e| e.from >= from) {
            return Ok(());
        }
        let members = self.latest().apply(change)?;
        self.epochs.push_back(Epoch { from, members });
        // Only the memberships around the commit index matter; the replica
        // trims at every snapshot, so this bound is never reached in
        // practice (a change takes MEMBERSHIP_DELAY_SLOTS slots at least).
        if self.epochs.len() > MAX_EPOCHS {
            self.epochs.pop_front();
        }
        Ok(())
    }

    /// Forgets the epochs that end before `slot` (keeping the one in effect
    /// there), so a snapshot at `slot` carries what later slots need.
    pub fn trim_before(&mut self, slot: Slot) {
        while self.epochs.len() > 1 && self.epochs[1].from <= slot {
            self.epochs.pop_front();
        }
    }

    /// This log as a snapshot of the slots below `slot` carries it: the
    /// membership in effect at `slot` and the changes chosen below `slot`
    /// (those chosen at `slot` or later are in the log after the snapshot,
    /// and are added again from there).
    pub fn snapshot_at(&self, slot: Slot) -> MembershipLog {
        let mut out = self.clone();
        out.trim_before(slot);
        let chosen_below = Slot(slot.0.saturating_add(MEMBERSHIP_DELAY_SLOTS));
        while out.epochs.len() > 1 && out.epochs.back().is_some_and(|e| e.from >= chosen_below) {
            out.epochs.pop_back();
        }
        out
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.epochs.len() as u32).to_le_bytes());
        for e in &self.epochs {
            out.extend_from_slice(&e.from.0.to_le_bytes());
            for set in [&e.members.voters, &e.members.learners, &e.members.retired] {
                out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                for n in set {
                    out.extend_from_slice(&(n.0 as u16).to_le_bytes());
                }
            }
            out.extend_from_slice(&(e.members.addresses.len() as u32).to_le_bytes());
            for (n, address) in &e.members.addresses {
                out.extend_from_slice(&(n.0 as u16).to_le_bytes());
                encode_address(address, out);
            }
        }
    }

    /// Reads what `encode` wrote (`with_addresses` false: as written before
    /// addresses were replicated, without them).
    fn decode(bytes: &mut &[u8], with_addresses: bool) -> Option<MembershipLog> {
        let decode_id = |bytes: &mut &[u8]| {
            let id = u16::from_le_bytes(take(bytes)?) as u64;
            (id != 0 && id <= NodeId::MAX).then_some(NodeId(id))
        };
        let count = u32::from_le_bytes(take(bytes)?) as usize;
        if count == 0 || count > MAX_EPOCHS {
            return None;
        }
        let mut epochs = VecDeque::with_capacity(count);
        for _ in 0..count {
            let from = Slot(u64::from_le_bytes(take(bytes)?));
            let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
            for set in sets.iter_mut() {
                let len = u32::from_le_bytes(take(bytes)?) as usize;
                if len > NodeId::MAX as usize {
                    return None;
                }
                for _ in 0..len {
                    set.insert(decode_id(bytes)?);
                }
            }
            let [voters, learners, retired] = sets;
            let mut addresses = BTreeMap::new();
            if with_addresses {
                let len = u32::from_le_bytes(take(bytes)?) as usize;
                if len > MAX_VOTERS + MAX_LEARNERS {
                    return None;
                }
                for _ in 0..len {
                    let node = decode_id(bytes)?;
                    addresses.insert(node, decode_address(bytes)?);
                }
            }
            if voters.is_empty() || epochs.back().is_some_and(|e: &Epoch| e.from >= from) {
                return None;
            }
            epochs.push_back(Epoch {
                from,
                members: Membership {
                    voters,
                    learners,
                    retired,
                    addresses,
                },
            });
        }
        Some(MembershipLog { epochs })
    }
}

/// Why a snapshot's membership header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSnapshotMembership;

/// A snapshot's bytes as the log keeps and ships them: the membership log
/// of the snapshot's slot (`MembershipLog::snapshot_at`), then the
/// application's bytes. With `changed` false (the cluster never changed its
/// membership) the application's bytes go alone, as the previous release
/// wrote them, so that it reads them; unless they happen to start with the
/// header's tag, when only the header keeps them apart.
pub fn frame_snapshot(members: &MembershipLog, changed: bool, app: Vec<u8>) -> Vec<u8> {
    let tagged = app.starts_with(SNAPSHOT_MAGIC) || app.starts_with(SNAPSHOT_MAGIC_NO_ADDRESSES);
    if !changed && !tagged {
        return app;
    }
    let mut out = Vec::with_capacity(app.len() + 64);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    members.encode(&mut out);
    out.extend_from_slice(&app);
    out
}

/// Splits a snapshot's bytes into its membership log (`None` for a
/// snapshot written without one) and the application's bytes.
pub fn unframe_snapshot(
    bytes: &[u8],
) -> Result<(Option<MembershipLog>, &[u8]), BadSnapshotMembership> {
    let (mut rest, with_addresses) = if let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) {
        (rest, true)
    } else if let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC_NO_ADDRESSES) {
        (rest, false)
    } else {
        return Ok((None, bytes));
    };
    let members = MembershipLog::decode(&mut rest, with_addresses).ok_or(BadSnapshotMembership)?;
    Ok((Some(members), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn changes_round_trip_and_commands_are_not_changes() {
        for change in [
            MembershipChange::AddLearner(NodeId(4), None),
            MembershipChange::AddLearner(NodeId(5), Some("10.0.0.5:7005".parse().unwrap())),
            MembershipChange::AddLearner(NodeId(6), Some("[fe80::1]:7006".parse().unwrap())),
            MembershipChange::Promote(NodeId(1023)),
            MembershipChange::Remove(NodeId(1)),
        ] {
            let value = change.encode();
            assert!(is_membership_value(&value));
            assert!(value.len() <= CHANGE_VALUE_BYTES);
            assert_eq!(MembershipChange::decode(&value), Some(change));
        }
        // Trailing bytes, or an address on anything but an addition, make
        // a malformed change.
        let mut trailing = MembershipChange::Promote(NodeId(4)).encode().to_vec();
        trailing.extend_from_slice(&[4, 10, 0, 0, 5, 0x5d, 0x1b]);
        assert_eq!(MembershipChange::decode(&trailing), None);
        let mut cut = MembershipChange::AddLearner(NodeId(5), Some("10.0.0.5:1".parse().unwrap()))
            .encode()
            .to_vec();
        cut.pop();
        assert_eq!(MembershipChange::decode(&cut), None);
        // A client command's envelope starts with its origin node id (at
        // most 1023), never eight 0xff bytes.
        let mut command = 2u64.to_le_bytes().to_vec();
        command.extend_from_slice(b"anything at all");
        assert!(!is_membership_value(&command));
        assert_eq!(MembershipChange::decode(&command), None);
        let mut bad = MembershipChange::Remove(NodeId(2)).encode().to_vec();
        bad[16] = 9;
        assert!(is_membership_value(&bad));
        assert_eq!(MembershipChange::decode(&bad), None);
        assert_eq!(MembershipChange::decode(&bad[..20]), None);
    }

    #[test]
    fn each_change_moves_at_most_one_voter_and_ids_are_never_reused() {
        let m = Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)]);
        let added = m
            .apply(MembershipChange::AddLearner(NodeId(4), None))
            .unwrap();
        assert_eq!(added.voters, m.voters);
        assert_eq!(
            added.apply(MembershipChange::AddLearner(NodeId(4), None)),
            Err(MembershipError::AlreadyMember)
        );
        assert_eq!(
            m.apply(MembershipChange::Promote(NodeId(4))),
            Err(MembershipError::NotALearner)
        );
        let promoted = added.apply(MembershipChange::Promote(NodeId(4))).unwrap();
        assert_eq!(promoted.voters, ids(&[1, 2, 3, 4]));
        for (membership, change, shown) in [
            (&m, MembershipChange::AddLearner(NodeId(4), None), false),
            (&added, MembershipChange::AddLearner(NodeId(4), None), true),
            (&added, MembershipChange::Promote(NodeId(4)), false),
            (
                &promoted,
                MembershipChange::AddLearner(NodeId(4), None),
                true,
            ),
            (&promoted, MembershipChange::Remove(NodeId(1)), false),
        ] {
            assert_eq!(membership.reflects(change), shown, "{change:?}");
        }
        assert_eq!(promoted.quorum(), 3);
        let removed = promoted.apply(MembershipChange::Remove(NodeId(1))).unwrap();
        assert_eq!(removed.voters, ids(&[2, 3, 4]));
        assert_eq!(
            removed.apply(MembershipChange::AddLearner(NodeId(1), None)),
            Err(MembershipError::Retired)
        );
        assert_eq!(
            removed.apply(MembershipChange::AddLearner(NodeId(1024), None)),
            Err(MembershipError::BadId)
        );
        let one = Membership::bootstrap([NodeId(1)]);
        assert_eq!(
            one.apply(MembershipChange::Remove(NodeId(1))),
            Err(MembershipError::LastVoter)
        );
    }

    #[test]
    fn a_change_decides_slots_from_alpha_after_its_own() {
        let mut log = MembershipLog::new(Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)]));
        log.on_chosen(Slot(10), MembershipChange::AddLearner(NodeId(4), None))
            .unwrap();
        let effect = Slot(10 + MEMBERSHIP_DELAY_SLOTS);
        assert!(log.at(Slot(effect.0 - 1)).learners.is_empty());
        assert_eq!(log.at(effect).learners, ids(&[4]));
        assert_eq!(log.next_change_after(Slot(10)), Some(effect));
        assert_eq!(log.from_slot(Slot(0)).count(), 2);
        assert_eq!(log.from_slot(effect).count(), 1);
        // A refused change changes nothing, on every replica alike.
        assert_eq!(
            log.on_chosen(Slot(40), MembershipChange::Promote(NodeId(9))),
            Err(MembershipError::NotALearner)
        );
        assert_eq!(log.epochs().count(), 2);
        log.trim_before(effect);
        assert_eq!(log.epochs().count(), 1);
        assert_eq!(log.at(Slot(0)).learners, ids(&[4]));
    }

    #[test]
    fn snapshots_carry_the_membership_log_and_old_snapshots_read_as_before() {
        let app = b"application bytes".to_vec();
        let first = MembershipLog::new(Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)]));
        assert_eq!(frame_snapshot(&first, false, app.clone()), app);
        assert_eq!(unframe_snapshot(&app), Ok((None, app.as_slice())));
        // Application bytes that happen to start with the tag get a header.
        let tricky = b"pxsnapm1 and more".to_vec();
        let framed = frame_snapshot(&first, false, tricky.clone());
        assert_eq!(
            unframe_snapshot(&framed),
            Ok((Some(first.clone()), tricky.as_slice()))
        );
        let mut log = MembershipLog::new(Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)]));
        let address = "127.0.0.1:7007".parse().unwrap();
        log.on_chosen(
            Slot(3),
            MembershipChange::AddLearner(NodeId(7), Some(address)),
        )
        .unwrap();
        assert_eq!(log.latest().addresses.get(&NodeId(7)), Some(&address));
        log.on_chosen(Slot(30), MembershipChange::Remove(NodeId(2)))
            .unwrap();
        let framed = frame_snapshot(&log, true, app.clone());
        let (members, rest) = unframe_snapshot(&framed).unwrap();
        assert_eq!(members.as_ref(), Some(&log));
        assert_eq!(rest, app.as_slice());
        for cut in 8..framed.len() - app.len() {
            assert!(unframe_snapshot(&framed[..cut]).is_err(), "cut at {cut}");
        }
        // A header written before addresses were replicated still reads.
        let mut old = b"pxsnapm1".to_vec();
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&0u64.to_le_bytes());
        old.extend_from_slice(&3u32.to_le_bytes());
        for id in [1u16, 2, 3] {
            old.extend_from_slice(&id.to_le_bytes());
        }
        old.extend_from_slice(&[0; 8]);
        old.extend_from_slice(&app);
        assert_eq!(unframe_snapshot(&old), Ok((Some(first), app.as_slice())));
        // A removed member's address goes with it.
        let without = log.latest().apply(MembershipChange::Remove(NodeId(7)));
        assert_eq!(without.map(|m| m.addresses.is_empty()), Ok(true));
    }

    #[test]
    fn a_snapshot_carries_only_changes_below_its_slot_and_replaying_the_log_adds_each_once() {
        let mut log = MembershipLog::new(Membership::bootstrap([NodeId(1), NodeId(2), NodeId(3)]));
        log.on_chosen(Slot(3), MembershipChange::AddLearner(NodeId(4), None))
            .unwrap();
        log.on_chosen(Slot(30), MembershipChange::Promote(NodeId(4)))
            .unwrap();
        // A snapshot of the slots below 20: the add, not the promotion.
        let mut restored = log.snapshot_at(Slot(20));
        assert_eq!(restored.latest().learners, ids(&[4]));
        // The log after the snapshot adds the promotion again, once.
        restored
            .on_chosen(Slot(30), MembershipChange::Promote(NodeId(4)))
            .unwrap();
        assert_eq!(restored, log.since_for_tests(Slot(20)));
        // A change already in the log is not added twice.
        restored
            .on_chosen(Slot(30), MembershipChange::Promote(NodeId(4)))
            .unwrap();
        assert_eq!(restored.epochs().count(), 2);
    }
}
