//! Starting a new cluster from an old one's state (`paxlock snapshot save`
//! and `restore`, ARCHITECTURE.md "Disaster recovery"): the state a stopped
//! node's data holds, and the first durable state of each node of the new
//! cluster.
//!
//! The new cluster is new in every way consensus cares about: its own
//! cluster id, members, ballots and data directories. Only the
//! application's state carries over, with two changes that keep the old
//! cluster's promises: the revision (and with it every later fencing
//! token) jumps ahead by a margin, so that no token the new cluster grants
//! equals or falls below one the old cluster may have granted after the
//! backup; and the leader epoch starts again, so that the new cluster's
//! first leader (whose ballots start low) is not taken for a deposed one.

use crate::locks::{Config, DecodeError, StateMachine};
use crate::paxos::membership::{frame_snapshot, unframe_snapshot, Membership, MembershipLog};
use crate::paxos::{Ballot, DurableState, NodeId, PersistOp, Slot, Snapshot};
use crate::proposal::{Proposal, ProposalError};

/// The default jump of the revision at a restore: 2^40, more fencing tokens
/// than a cluster granting a million a second grants in twelve days.
/// Tokens stay far below 2^53 (exact in a JSON number) for thousands of
/// restores.
pub const DEFAULT_REVISION_BUMP: u64 = 1 << 40;

/// Which of a stopped node's log entries become the new cluster's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Entries the node knew chosen, up to the first it did not.
    Chosen,
    /// Also the entries it had only accepted (each slot's value at the
    /// highest ballot it accepted), up to the first slot it holds nothing
    /// for: recovery after losing a majority. An accepted entry may not
    /// have been chosen (another value may have been, at a higher ballot,
    /// without this node); one acknowledged to a client was accepted by a
    /// majority. The last leader accepted every entry of its leadership,
    /// so read the survivor with the highest accepted ballot
    /// ([`Replayed::highest_ballot`]) and, among those, the furthest log:
    /// a node whose log reaches further under an older ballot may hold a
    /// value that a later leader replaced.
    Accepted,
}

/// The state machine a stopped node's durable state gives.
#[derive(Debug)]
pub struct Replayed {
    /// The state after the last entry applied.
    pub machine: StateMachine,
    /// The first slot not applied.
    pub up_to: Slot,
    /// Entries applied that the node knew chosen.
    pub chosen: u64,
    /// Entries applied that it had only accepted ([`Replay::Accepted`]).
    pub accepted_only: u64,
    /// Entries it holds at or after `up_to` that were not applied: after a
    /// slot it holds nothing for (or, replaying chosen entries only, one
    /// it did not know chosen).
    pub left_out: u64,
    /// The highest ballot of the entries it holds (its promise if higher
    /// is not counted): of several survivors, the one with the highest
    /// is read (see [`Replay::Accepted`]).
    pub highest_ballot: Ballot,
}

/// Why a new cluster's state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NewClusterError {
    /// The node's snapshot, or the backup, does not decode.
    #[error("the state does not decode: {0}")]
    State(#[from] DecodeError),
    /// The snapshot's membership header is damaged.
    #[error("the snapshot's membership header does not decode")]
    Membership,
    /// The state could not be serialized again.
    #[error("the state cannot be serialized: {0}")]
    Encode(String),
    /// The revision jump would overflow.
    #[error(
        "the revision {revision} plus the jump {bump} overflows; use a smaller --bump-revision"
    )]
    RevisionOverflow {
        /// The state's revision.
        revision: u64,
        /// The jump asked for.
        bump: u64,
    },
    /// No voter, or an id no node may have.
    #[error("the new cluster's voters {voters:?} are not 1 to 15 ids in 1..=1023")]
    BadVoters {
        /// The voters given.
        voters: Vec<u64>,
    },
}

/// The state machine `durable` (a stopped node's acceptor state) holds:
/// its snapshot, then its log entries in slot order as `replay` says,
/// under `config` (the node's own, as its replica restores and applies
/// with: the state bound is not in snapshots). Entries are applied as the
/// node applies them: a membership change or an undecodable value is
/// skipped.
pub fn replay(
    durable: &DurableState,
    config: &Config,
    replay: Replay,
) -> Result<Replayed, NewClusterError> {
    let (mut machine, mut up_to) = match &durable.snapshot {
        Some(snapshot) => {
            let (_, app) =
                unframe_snapshot(&snapshot.data).map_err(|_| NewClusterError::Membership)?;
            (
                StateMachine::restore_as_replica(app, config)?,
                snapshot.up_to,
            )
        }
        None => (StateMachine::new(config.clone()), Slot(0)),
    };
    let highest_ballot = durable
        .log
        .values()
        .map(|e| e.ballot)
        .max()
        .unwrap_or(Ballot::ZERO);
    let (mut chosen, mut accepted_only, mut left_out) = (0, 0, 0);
    for (slot, entry) in durable.log.range(up_to..) {
        let usable = entry.chosen || replay == Replay::Accepted;
        if *slot != up_to || !usable || left_out > 0 {
            left_out += 1;
            continue;
        }
        for value in &entry.batch {
            match Proposal::decode(value) {
                Ok(proposal) => {
                    machine.apply(slot.0, proposal.command);
                }
                Err(ProposalError::Membership) => {}
                // Skipped by every replica alike (see the lock service's
                // apply).
                Err(_) => {}
            }
        }
        if entry.chosen {
            chosen += 1;
        } else {
            accepted_only += 1;
        }
        up_to = Slot(slot.0 + 1);
    }
    Ok(Replayed {
        machine,
        up_to,
        chosen,
        accepted_only,
        left_out,
        highest_ballot,
    })
}

/// What one node of a new cluster starts from.
#[derive(Debug)]
pub struct FirstState {
    /// To persist into the node's empty data directory, in order.
    pub ops: Vec<PersistOp>,
    /// The revision the new cluster continues from.
    pub revision: u64,
    /// The first slot the new cluster decides.
    pub up_to: Slot,
}

/// The first durable state of a node of a new cluster whose voters are
/// `voters`, starting from a backup's `state` (a state machine snapshot)
/// taken up to slot `up_to`, its revision jumped by `bump`. Every node of
/// the new cluster starts from the same state, so they agree from the
/// first slot.
pub fn first_state(
    state: &[u8],
    up_to: u64,
    voters: &[NodeId],
    bump: u64,
) -> Result<FirstState, NewClusterError> {
    let valid = |n: &NodeId| (1..=NodeId::MAX).contains(&n.0);
    if voters.is_empty()
        || voters.len() > crate::paxos::membership::MAX_VOTERS
        || !voters.iter().all(valid)
    {
        return Err(NewClusterError::BadVoters {
            voters: voters.iter().map(|n| n.0).collect(),
        });
    }
    let mut machine = StateMachine::restore(state)?;
    let revision = machine.revision();
    machine
        .begin_new_cluster(bump)
        .ok_or(NewClusterError::RevisionOverflow { revision, bump })?;
    let app = machine
        .snapshot()
        .map_err(|e| NewClusterError::Encode(e.to_string()))?;
    // A snapshot at slot 0 covers nothing and would be ignored: the new
    // cluster starts at slot 1 at the least (it has no slot 0).
    let up_to = Slot(up_to.max(1));
    let members = MembershipLog::new(Membership::bootstrap(voters.iter().copied()));
    Ok(FirstState {
        ops: vec![PersistOp::Snapshot(Snapshot {
            up_to,
            data: frame_snapshot(&members, true, app),
        })],
        revision: machine.revision(),
        up_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::command::{Command, CommandKind};
    use crate::paxos::{DurableEntry, Value};

    fn open_session(at_ms: u64) -> Value {
        let command = Command {
            at_ms,
            kind: CommandKind::OpenSession { ttl_ms: 10_000 },
        };
        Value::from(Proposal::encode(1, at_ms, &command).expect("encodes"))
    }

    fn entry(value: Value, chosen: bool) -> DurableEntry {
        DurableEntry {
            ballot: Ballot {
                round: 3,
                node: NodeId(1),
            },
            batch: vec![value],
            chosen,
        }
    }

    #[test]
    fn replay_stops_at_the_first_hole_and_counts_what_it_left() {
        let mut durable = DurableState::default();
        durable.log.insert(Slot(0), entry(open_session(1), true));
        durable.log.insert(Slot(1), entry(open_session(2), false));
        durable.log.insert(Slot(2), entry(open_session(3), true));
        durable.log.insert(Slot(4), entry(open_session(4), true));
        let config = Config::default();

        let known = replay(&durable, &config, Replay::Chosen).expect("replays");
        assert_eq!(
            (known.up_to, known.chosen, known.accepted_only),
            (Slot(1), 1, 0)
        );
        assert_eq!(known.left_out, 3);
        assert_eq!(known.machine.revision(), 1);

        let all = replay(&durable, &config, Replay::Accepted).expect("replays");
        assert_eq!(all.highest_ballot.round, 3);
        assert_eq!((all.up_to, all.chosen, all.accepted_only), (Slot(3), 2, 1));
        assert_eq!(all.left_out, 1, "slot 4 lies after the hole at 3");
        assert_eq!(all.machine.revision(), 3);
    }

    #[test]
    fn a_new_cluster_continues_above_every_old_token_with_a_fresh_epoch() {
        let mut machine = StateMachine::new(Config::default());
        machine.apply(
            0,
            Proposal::decode(&open_session(1)).expect("decodes").command,
        );
        let state = machine.snapshot().expect("snapshots");
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let first = first_state(&state, 7, &voters, 1000).expect("a first state");
        assert_eq!((first.revision, first.up_to), (1001, Slot(7)));
        let [PersistOp::Snapshot(snapshot)] = first.ops.as_slice() else {
            panic!("one snapshot: {:?}", first.ops);
        };
        let (members, app) = unframe_snapshot(&snapshot.data).expect("framed");
        let members = members.expect("with the new membership");
        assert_eq!(members.latest().voters, voters.into_iter().collect());
        let restored = StateMachine::restore(app).expect("restores");
        assert_eq!(restored.revision(), 1001);
        assert_eq!(restored.leader_epoch(), 0);

        assert!(matches!(
            first_state(&state, 7, &voters, u64::MAX),
            Err(NewClusterError::RevisionOverflow { .. })
        ));
        assert!(matches!(
            first_state(&state, 7, &[NodeId(0)], 0),
            Err(NewClusterError::BadVoters { .. })
        ));
        assert!(first_state(b"garbage", 7, &voters, 0).is_err());
    }
}
