//! The leader role: what a leading node decides about sessions and time,
//! with no I/O. The node's service and the deterministic simulator both
//! drive this one type, so every rule below is the rule that ships and the
//! rule the simulator checks.
//!
//! A node leads from `BecameLeader` until it loses leadership. While it
//! leads, this role:
//!
//! - proposes its `Takeover { epoch }` first and again while it is not
//!   applied (a proposal lost when leadership wobbled must not leave the
//!   node unable to serve);
//! - once the takeover is applied, restarts every session's deadline at
//!   that moment + TTL (Chubby's grace: a new leader cannot know when a
//!   session last renewed, and the old leader may have answered a
//!   keepalive just before it lost its lease);
//! - answers a keepalive only under the leader lease, only after its
//!   takeover is applied, and never for a session whose time ran out
//!   ([`Deadline::Expiring`]): from then on its expiry may be in the log,
//!   and a client told its session lives while the expiry hands its locks
//!   to others would act as a holder alongside the next one;
//! - proposes `ExpireSession` (carrying the epoch) for sessions whose
//!   deadline passed, again after [`EXPIRY_RETRY`] if the session is still
//!   there, at most [`MAX_EXPIRIES_PER_SCAN`] per scan;
//! - stamps commands with the replicated logical clock continued on its own
//!   clock from the takeover ([`LeaderRole::stamp_ms`]), never with a wall
//!   clock: monotonic clocks have per-node origins, and a leader whose wall
//!   clock runs fast would push every later lock-delay out;
//! - proposes a `Tick` once a lock-delay's end has passed on that clock, so
//!   the lock's waiters are granted without waiting for other traffic.
//!
//! Time is the node's own monotonic clock ([`Nanos`]), read by the caller.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::locks::{
    Command, CommandKind, Event, FencingToken, Output, Reply, SessionId, StateMachine,
    CURRENT_PROTOCOL,
};
use crate::paxos::{Ballot, Nanos};

const NS_PER_MS: u64 = 1_000_000;

/// How often the node calls [`LeaderRole::due`]. A late scan only makes an
/// expiry later, which is safe; it bounds how late a lock-delay ends.
pub const SCAN_PERIOD: Duration = Duration::from_millis(50);

/// After proposing an expiry, wait this long before proposing it again.
pub const EXPIRY_RETRY: Duration = Duration::from_secs(1);

/// While the takeover is not applied, propose it again this often.
pub const TAKEOVER_RETRY: Duration = Duration::from_millis(200);

/// After proposing a `Tick`, wait this long before proposing another.
pub const TICK_RETRY: Duration = Duration::from_millis(100);

/// Most expiries proposed by one scan: a leader taking over a cluster full
/// of dead sessions expires them over several scans instead of filling the
/// proposal queue at once.
pub const MAX_EXPIRIES_PER_SCAN: usize = 256;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where a session stands on the leader's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The session ends at this time unless a keepalive moves it.
    At(Nanos),
    /// Its time ran out and its expiry was proposed; proposed again at
    /// `retry_at` if the session is still there (the proposal failed).
    Expiring {
        /// When to propose the expiry again.
        retry_at: Nanos,
    },
}

impl Deadline {
    /// Whether the session's expiry should be proposed at `now`.
    pub fn due(&self, now: Nanos) -> bool {
        match *self {
            Deadline::At(at) => at <= now,
            Deadline::Expiring { retry_at } => retry_at <= now,
        }
    }

    /// Whether a keepalive at `now` may still extend the session.
    pub fn extendable(&self, now: Nanos) -> bool {
        matches!(*self, Deadline::At(at) if now < at)
    }
}

/// Why a keepalive was not answered. Each tells the client something
/// different: try another node, retry here shortly, or open a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeepaliveRefused {
    /// This node does not lead.
    #[error("this node does not lead the cluster")]
    NotLeader,
    /// This node leads but its leader lease has not begun or has ended:
    /// another node may lead by now.
    #[error("this node leads but does not hold the leader lease")]
    NoLease,
    /// This node leads but its takeover is not applied yet, so its
    /// deadlines are not yet authoritative.
    #[error("this node has just become leader and is still taking over")]
    TakingOver,
    /// The session is closed, expired or never existed.
    #[error("the session is closed or expired")]
    Unknown,
    /// The session's time ran out and its expiry is proposed.
    #[error(
        "the session outlived its TTL without a keepalive reaching the leader and is being expired"
    )]
    Expiring,
    /// An administrator's take of the session or of one of its grants is
    /// proposed and not applied yet (see [`LeaderRole::gate_take`]).
    #[error("an administrator's revocation or force-release of this session is being committed")]
    Taking,
}

/// Test-only switches that each break one rule of the role, so the
/// simulator's canary tests can show that its checks catch it.
#[cfg(feature = "canary")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleCanary {
    /// Every rule on.
    #[default]
    None,
    /// The takeover gives sessions no grace: every deadline is due at once.
    NoDeadlineRestart,
    /// Keepalives are answered without the leader lease (by a leader that
    /// may already have been replaced).
    NoLeaseCheck,
    /// A keepalive revives a session whose time ran out, though its expiry
    /// may be in the log already (the bug of ef29f03).
    ReviveExpiring,
    /// Keepalives of a session are answered while a take of it is
    /// proposed and not applied.
    NoTakeGate,
}

/// The leader role of one node (see the module docs). `Default` is a node
/// that does not lead.
#[derive(Debug, Default)]
pub struct LeaderRole {
    leadership: Option<Leadership>,
    #[cfg(feature = "canary")]
    canary: RoleCanary,
}

/// One leadership of this node, from `BecameLeader` to losing it.
#[derive(Debug)]
struct Leadership {
    epoch: u64,
    /// Our `Takeover` is applied (the first copy of it; a re-proposed copy
    /// applied later changes nothing).
    takeover_applied: bool,
    takeover_proposed_at: Nanos,
    /// (logical ms, our clock) when our takeover was applied: stamps
    /// continue the logical clock from there at our clock's rate.
    clock_base: Option<(u64, Nanos)>,
    deadlines: BTreeMap<SessionId, Deadline>,
    tick_proposed_at: Option<Nanos>,
    /// Administrators' takes this leadership proposed (see
    /// [`LeaderRole::gate_take`]), at most [`MAX_TAKES_IN_FLIGHT`].
    takes: Vec<Take>,
}

/// An administrator's take this leader proposed: of a whole session (a
/// revocation), or of the grant `token` of lock `name` (a force-release).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Take {
    session: SessionId,
    grant: Option<(String, FencingToken)>,
}

impl Take {
    /// Whether the machine shows it settled: the session gone, or the
    /// grant no longer current (taken, or ended otherwise). Until then its
    /// command is proposed and not applied, or was lost without the
    /// leadership ending (rare: the session then expires, keepalives
    /// refused, which is what was asked, and more).
    fn settled(&self, machine: &StateMachine) -> bool {
        if !machine.has_session(self.session) {
            return true;
        }
        match &self.grant {
            None => false,
            Some((name, token)) => !machine
                .grant_to_take(name, Some(*token))
                .is_ok_and(|(session, _)| session == self.session),
        }
    }
}

/// Most takes one leader has in flight; more wait (the request is refused
/// as retryable) until earlier ones settle.
pub const MAX_TAKES_IN_FLIGHT: usize = 1024;

/// The epoch a leadership's takeover carries. Ballots are unique and
/// increase with each leadership, so an epoch made from one does too: node
/// ids are at most [`NodeId::MAX`](crate::paxos::NodeId::MAX), below 1024
/// (which `paxos::Config::validate` checks).
pub fn epoch_of(ballot: Ballot) -> u64 {
    ballot
        .round
        .saturating_mul(1024)
        .saturating_add(ballot.node.0 % 1024)
}

impl LeaderRole {
    /// A role with one rule switched off (see [`RoleCanary`]).
    #[cfg(feature = "canary")]
    pub fn with_canary(canary: RoleCanary) -> LeaderRole {
        LeaderRole {
            leadership: None,
            canary,
        }
    }

    /// Whether the lease rule of keepalives is switched off (the canary
    /// build only).
    fn canary_no_lease_check(&self) -> bool {
        #[cfg(feature = "canary")]
        return self.canary == RoleCanary::NoLeaseCheck;
        #[cfg(not(feature = "canary"))]
        false
    }

    /// Whether keepalives may revive a session whose time ran out (the
    /// canary build only).
    fn canary_revive_expiring(&self) -> bool {
        #[cfg(feature = "canary")]
        return self.canary == RoleCanary::ReviveExpiring;
        #[cfg(not(feature = "canary"))]
        false
    }

    /// Whether the grace rule is switched off (the canary build only).
    fn no_grace(&self) -> bool {
        #[cfg(feature = "canary")]
        return self.canary == RoleCanary::NoDeadlineRestart;
        #[cfg(not(feature = "canary"))]
        false
    }

    /// This leadership's takeover epoch; 0 if the node does not lead.
    pub fn epoch(&self) -> u64 {
        self.leadership.as_ref().map_or(0, |l| l.epoch)
    }

    /// The node became leader under `ballot`: returns its takeover, the
    /// first command of the leadership, to propose before anything else.
    pub fn became_leader(&mut self, ballot: Ballot, now: Nanos) -> Command {
        let epoch = epoch_of(ballot);
        self.leadership = Some(Leadership {
            epoch,
            takeover_applied: false,
            takeover_proposed_at: now,
            clock_base: None,
            deadlines: BTreeMap::new(),
            tick_proposed_at: None,
            takes: Vec::new(),
        });
        Command {
            at_ms: self.stamp_ms(now),
            kind: CommandKind::Takeover { epoch },
        }
    }

    /// The node no longer leads: it answers nothing and proposes nothing.
    pub fn lost_leadership(&mut self) {
        self.leadership = None;
    }

    /// Whether the node leads, its takeover is applied and no later one:
    /// its deadlines are authoritative and every entry an earlier leader
    /// committed is applied here.
    pub fn serving(&self, machine: &StateMachine) -> bool {
        self.leadership
            .as_ref()
            .is_some_and(|l| l.takeover_applied && machine.leader_epoch() == l.epoch)
    }

    /// The protocol version to record in the log now, if any: this node
    /// serves (its takeover is applied), the log records less than
    /// [`CURRENT_PROTOCOL`], and every other member (`peers` of them) is
    /// connected and speaks it (`peers_speaking_current`). A member that is
    /// down may run an older release, so every one must be seen; once
    /// recorded, the version is never lowered.
    pub fn protocol_to_record(
        &self,
        machine: &StateMachine,
        peers: usize,
        peers_speaking_current: usize,
    ) -> Option<u32> {
        let ready = self.serving(machine)
            && machine.protocol() < CURRENT_PROTOCOL
            && peers_speaking_current >= peers;
        ready.then_some(CURRENT_PROTOCOL)
    }

    /// A command was applied to `machine` with `output`. The first time
    /// the machine's epoch is this leadership's, the command was its
    /// takeover (only a takeover moves the epoch, and each leadership's is
    /// unique): deadlines restart then, and never again for a re-proposed
    /// copy, which would revive a session whose expiry is proposed.
    pub fn applied(&mut self, machine: &StateMachine, output: &Output, now: Nanos) {
        let no_grace = self.no_grace();
        let Some(l) = self.leadership.as_mut() else {
            return;
        };
        if !l.takeover_applied && machine.leader_epoch() == l.epoch {
            l.take_over(machine, now, no_grace);
            return;
        }
        if !l.takeover_applied {
            // The takeover restarts every session it finds.
            return;
        }
        // Only an open (of either protocol) answers this; a retried open's
        // session is tracked already (and restarting its deadline could
        // revive one whose expiry is proposed).
        if let Ok(Reply::SessionOpened { session }) = &output.reply {
            if !output.duplicate {
                if let Some(ttl_ms) = machine.session_ttl_ms(*session) {
                    l.deadlines
                        .insert(*session, Deadline::At(now.plus(ms(ttl_ms))));
                }
            }
        }
        for event in &output.events {
            if let Event::SessionEnded { session, .. } = event {
                l.deadlines.remove(session);
            }
        }
    }

    /// `machine` was replaced by a snapshot's state.
    pub fn restored(&mut self, machine: &StateMachine, now: Nanos) {
        let no_grace = self.no_grace();
        let Some(l) = self.leadership.as_mut() else {
            return;
        };
        if machine.leader_epoch() != l.epoch {
            // Not ours (yet, or any more): wait for our takeover.
            l.takeover_applied = false;
            return;
        }
        if !l.takeover_applied {
            l.take_over(machine, now, no_grace);
            return;
        }
        // Sessions the snapshot ended go; sessions it opened get a full
        // TTL; the rest keep where they stand (an expiring one stays so).
        l.deadlines
            .retain(|session, _| machine.has_session(*session));
        for (session, ttl_ms) in machine.sessions() {
            l.deadlines
                .entry(session)
                .or_insert(Deadline::At(now.plus(ms(ttl_ms))));
        }
    }

    /// A keepalive of `session` at `now`, with the leader lease reaching
    /// `lease_until` (`None`: no lease). Extends the session by its TTL
    /// and returns the TTL (ms), or says why not.
    pub fn keep_alive(
        &mut self,
        machine: &StateMachine,
        session: SessionId,
        now: Nanos,
        lease_until: Option<Nanos>,
    ) -> Result<u64, KeepaliveRefused> {
        if self.leadership.is_none() {
            return Err(KeepaliveRefused::NotLeader);
        }
        // Answered only under the lease: a new leader cannot exist before
        // it ends, so every answer precedes the next takeover's grace.
        if lease_until.is_none_or(|until| now >= until) && !self.canary_no_lease_check() {
            return Err(KeepaliveRefused::NoLease);
        }
        if !self.serving(machine) {
            return Err(KeepaliveRefused::TakingOver);
        }
        if self.taking(machine, session) {
            return Err(KeepaliveRefused::Taking);
        }
        let ttl_ms = machine
            .session_ttl_ms(session)
            .ok_or(KeepaliveRefused::Unknown)?;
        let revive_expiring = self.canary_revive_expiring();
        let deadline = self
            .leadership
            .as_mut()
            .and_then(|l| l.deadlines.get_mut(&session))
            .ok_or(KeepaliveRefused::Unknown)?;
        if !deadline.extendable(now) && !revive_expiring {
            return Err(KeepaliveRefused::Expiring);
        }
        *deadline = Deadline::At(now.plus(ms(ttl_ms)));
        Ok(ttl_ms)
    }

    /// Records that this leader proposes a take of `session` (a revocation:
    /// `grant` `None`) or of its grant `grant` (a force-release): until the
    /// machine shows it settled, this leader answers no keepalive of the
    /// session. The take's lock-delay counts from its command's stamp, and
    /// a keepalive sent after that stamp and answered before the command
    /// is applied would extend the client's lease past it (commits can
    /// stall while the lease holds; the simulator's force-release world
    /// found it). A keepalive answered before the stamp was sent before it,
    /// and one answered after the apply names the taken grant. `false` (do
    /// not propose; retry) if [`MAX_TAKES_IN_FLIGHT`] are unsettled.
    pub fn gate_take(
        &mut self,
        machine: &StateMachine,
        session: SessionId,
        grant: Option<(String, FencingToken)>,
    ) -> bool {
        let Some(l) = self.leadership.as_mut() else {
            return false;
        };
        if l.takes.len() >= MAX_TAKES_IN_FLIGHT {
            l.takes.retain(|t| !t.settled(machine));
            if l.takes.len() >= MAX_TAKES_IN_FLIGHT {
                return false;
            }
        }
        l.takes.push(Take { session, grant });
        true
    }

    /// Whether a take of `session` this leader proposed is not settled
    /// yet; settled ones are forgotten on the way.
    fn taking(&mut self, machine: &StateMachine, session: SessionId) -> bool {
        #[cfg(feature = "canary")]
        if self.canary == RoleCanary::NoTakeGate {
            return false;
        }
        let Some(l) = self.leadership.as_mut() else {
            return false;
        };
        if l.takes.is_empty() {
            return false;
        }
        l.takes.retain(|t| !t.settled(machine));
        l.takes.iter().any(|t| t.session == session)
    }

    /// Where `session` stands, if this node tracks it.
    pub fn deadline(&self, session: SessionId) -> Option<Deadline> {
        self.leadership
            .as_ref()
            .and_then(|l| l.deadlines.get(&session).copied())
    }

    /// The `at_ms` to stamp on a command proposed at `now`: the logical
    /// clock continued on this node's clock since its takeover was
    /// applied; 0 before that (the machine keeps the largest stamp it has
    /// applied, so 0 means "no later than now").
    pub fn stamp_ms(&self, now: Nanos) -> u64 {
        match self.leadership.as_ref().and_then(|l| l.clock_base) {
            Some((base_ms, base_at)) => base_ms.saturating_add(now.since(base_at) / NS_PER_MS),
            None => 0,
        }
    }

    /// What the leader should propose at `now`: its takeover again while it
    /// is not applied; expiries of sessions whose time ran out (marked
    /// expiring from here on); a `Tick` once a lock-delay has ended.
    pub fn due(&mut self, machine: &StateMachine, now: Nanos) -> Vec<CommandKind> {
        let serving = self.serving(machine);
        let stamp = self.stamp_ms(now);
        let Some(l) = self.leadership.as_mut() else {
            return Vec::new();
        };
        if !serving {
            if !l.takeover_applied && now.since(l.takeover_proposed_at) >= nanos(TAKEOVER_RETRY) {
                l.takeover_proposed_at = now;
                return vec![CommandKind::Takeover { epoch: l.epoch }];
            }
            return Vec::new();
        }
        let retry_at = now.plus(nanos(EXPIRY_RETRY));
        let epoch = l.epoch;
        let mut due: Vec<CommandKind> = l
            .deadlines
            .iter_mut()
            .filter(|(_, deadline)| deadline.due(now))
            .take(MAX_EXPIRIES_PER_SCAN)
            .map(|(session, deadline)| {
                *deadline = Deadline::Expiring { retry_at };
                CommandKind::ExpireSession {
                    session: *session,
                    epoch,
                }
            })
            .collect();
        let delay_ended = machine.next_delay_end_ms().is_some_and(|end| end <= stamp);
        let tick_waited = l
            .tick_proposed_at
            .is_none_or(|at| now.since(at) >= nanos(TICK_RETRY));
        if delay_ended && tick_waited {
            l.tick_proposed_at = Some(now);
            due.push(CommandKind::Tick);
        }
        due
    }
}

impl Leadership {
    fn take_over(&mut self, machine: &StateMachine, now: Nanos, no_grace: bool) {
        self.takeover_applied = true;
        self.clock_base = Some((machine.now_ms(), now));
        self.deadlines = machine
            .sessions()
            .map(|(session, ttl_ms)| {
                let at = if no_grace { now } else { now.plus(ms(ttl_ms)) };
                (session, Deadline::At(at))
            })
            .collect();
    }
}

fn ms(ms: u64) -> u64 {
    ms.saturating_mul(NS_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{ClientOp, Config, Limits, RequestId};
    use crate::paxos::NodeId;

    const SEC: u64 = 1_000_000_000;
    const TTL_MS: u64 = 10_000;

    /// A node's machine and role, applying what it is told at the times
    /// it is told, as the apply loop does.
    struct Node {
        machine: StateMachine,
        role: LeaderRole,
        slot: u64,
    }

    impl Node {
        fn new(lock_delay_ms: u64) -> Node {
            Node {
                machine: StateMachine::new(Config {
                    lock_delay_ms,
                    limits: Limits::default(),
                    ..Config::default()
                }),
                role: LeaderRole::default(),
                slot: 0,
            }
        }

        fn apply(&mut self, kind: CommandKind, at_ms: u64, now: Nanos) -> Output {
            self.slot += 1;
            let output = self.machine.apply(self.slot, Command { at_ms, kind });
            self.role.applied(&self.machine, &output, now);
            output
        }

        fn open(&mut self, now: Nanos) -> SessionId {
            match self
                .apply(CommandKind::OpenSession { ttl_ms: TTL_MS }, 0, now)
                .reply
            {
                Ok(Reply::SessionOpened { session }) => session,
                other => panic!("open failed: {other:?}"),
            }
        }

        /// Leads under round `round` from `at`; its takeover applied at `applied_at`.
        fn lead(&mut self, round: u64, at: Nanos, applied_at: Nanos) -> u64 {
            let ballot = Ballot {
                round,
                node: NodeId(1),
            };
            let takeover = self.role.became_leader(ballot, at);
            self.apply(takeover.kind, takeover.at_ms, applied_at);
            self.role.epoch()
        }
    }

    fn at(seconds: u64) -> Nanos {
        Nanos(seconds * SEC)
    }

    fn forever() -> Option<Nanos> {
        Some(Nanos(u64::MAX))
    }

    #[test]
    fn the_protocol_is_recorded_only_by_a_serving_leader_once_every_peer_speaks_it() {
        let mut node = Node::new(0);
        assert_eq!(
            node.role.protocol_to_record(&node.machine, 2, 2),
            None,
            "not leading"
        );
        let ballot = Ballot {
            round: 1,
            node: NodeId(1),
        };
        let takeover = node.role.became_leader(ballot, at(1));
        assert_eq!(
            node.role.protocol_to_record(&node.machine, 2, 2),
            None,
            "takeover not applied"
        );
        node.apply(takeover.kind, takeover.at_ms, at(1));
        assert_eq!(
            node.role.protocol_to_record(&node.machine, 2, 1),
            None,
            "a peer is older or down"
        );
        assert_eq!(
            node.role.protocol_to_record(&node.machine, 2, 2),
            Some(CURRENT_PROTOCOL)
        );
        node.apply(
            CommandKind::RaiseProtocol {
                version: CURRENT_PROTOCOL,
            },
            0,
            at(2),
        );
        assert_eq!(
            node.role.protocol_to_record(&node.machine, 2, 2),
            None,
            "recorded"
        );
    }

    #[test]
    fn deadlines_restart_a_full_ttl_after_the_takeover_is_applied() {
        let mut node = Node::new(0);
        let session = node.open(at(0));
        node.lead(1, at(100), at(105));
        assert_eq!(
            node.role.deadline(session),
            Some(Deadline::At(at(105).plus(TTL_MS * 1_000_000)))
        );
        // Not due before then, due after.
        assert!(node.role.due(&node.machine, at(114)).is_empty());
        assert_eq!(
            node.role.due(&node.machine, at(115)),
            vec![CommandKind::ExpireSession {
                session,
                epoch: node.role.epoch()
            }]
        );
    }

    /// Regression (found in review): the expiry scan moved a session whose
    /// time ran out to "retry in 1 s" while its expiry was in the log, so a
    /// late keepalive revived it and was answered: its client went on as a
    /// holder while the expiry handed its locks to the next session.
    #[test]
    fn a_keepalive_cannot_revive_a_session_whose_expiry_is_proposed() {
        let mut node = Node::new(0);
        let session = node.open(at(0));
        node.lead(1, at(1), at(1));
        assert_eq!(
            node.role
                .keep_alive(&node.machine, session, at(2), forever()),
            Ok(TTL_MS)
        );
        assert_eq!(node.role.due(&node.machine, at(12)).len(), 1);
        assert_eq!(
            node.role
                .keep_alive(&node.machine, session, at(12), forever()),
            Err(KeepaliveRefused::Expiring)
        );
        // Nor after the retry time passes.
        assert_eq!(
            node.role
                .keep_alive(&node.machine, session, at(20), forever()),
            Err(KeepaliveRefused::Expiring)
        );
    }

    /// A copy of the takeover re-proposed and applied again must not
    /// restart deadlines: that would revive a session being expired.
    #[test]
    fn a_second_copy_of_the_takeover_restarts_nothing() {
        let mut node = Node::new(0);
        let session = node.open(at(0));
        let epoch = node.lead(1, at(1), at(1));
        assert_eq!(node.role.due(&node.machine, at(11)).len(), 1);
        node.apply(CommandKind::Takeover { epoch }, 0, at(12));
        assert!(matches!(
            node.role.deadline(session),
            Some(Deadline::Expiring { .. })
        ));
    }

    #[test]
    fn keepalives_need_leadership_the_lease_and_the_applied_takeover() {
        let mut node = Node::new(0);
        let session = node.open(at(0));
        let refused =
            |node: &mut Node, lease| node.role.keep_alive(&node.machine, session, at(3), lease);
        assert_eq!(
            refused(&mut node, forever()),
            Err(KeepaliveRefused::NotLeader)
        );
        node.role.became_leader(
            Ballot {
                round: 1,
                node: NodeId(1),
            },
            at(1),
        );
        assert_eq!(
            refused(&mut node, forever()),
            Err(KeepaliveRefused::TakingOver)
        );
        assert_eq!(refused(&mut node, None), Err(KeepaliveRefused::NoLease));
        let epoch = node.role.epoch();
        node.apply(CommandKind::Takeover { epoch }, 0, at(2));
        assert_eq!(
            refused(&mut node, Some(at(3))),
            Err(KeepaliveRefused::NoLease)
        );
        assert_eq!(refused(&mut node, Some(at(4))), Ok(TTL_MS));
        // A later leader's takeover applied here: no longer serving.
        node.apply(CommandKind::Takeover { epoch: epoch + 1 }, 0, at(3));
        assert_eq!(
            refused(&mut node, forever()),
            Err(KeepaliveRefused::TakingOver)
        );
        node.role.lost_leadership();
        assert_eq!(
            refused(&mut node, forever()),
            Err(KeepaliveRefused::NotLeader)
        );
    }

    #[test]
    fn an_unapplied_takeover_is_proposed_again() {
        let mut node = Node::new(0);
        node.role.became_leader(
            Ballot {
                round: 1,
                node: NodeId(1),
            },
            at(1),
        );
        let epoch = node.role.epoch();
        assert!(node.role.due(&node.machine, at(1)).is_empty());
        let again = node
            .role
            .due(&node.machine, at(1).plus(nanos(TAKEOVER_RETRY)));
        assert_eq!(again, vec![CommandKind::Takeover { epoch }]);
        node.apply(CommandKind::Takeover { epoch }, 0, at(2));
        assert!(node.role.due(&node.machine, at(3)).is_empty());
    }

    #[test]
    fn stamps_continue_the_logical_clock_from_the_takeover_on_this_nodes_clock() {
        let mut node = Node::new(0);
        // An earlier leader's stamps moved the logical clock to 50 s.
        node.apply(CommandKind::Tick, 50_000, at(0));
        assert_eq!(
            node.role.stamp_ms(at(1_000)),
            0,
            "not leading: no time of ours"
        );
        node.lead(1, at(1_000), at(1_000));
        assert_eq!(node.role.stamp_ms(at(1_002)), 52_000);
    }

    #[test]
    fn a_tick_is_proposed_once_a_lock_delay_has_ended() {
        let mut node = Node::new(300);
        let holder = node.open(at(0));
        let waiter = node.open(at(0));
        let acquire = |session, request_id| CommandKind::Client {
            session,
            request_id: RequestId(request_id),
            ack_below: RequestId(0),
            waiting: Vec::new(),
            op: ClientOp::Acquire {
                name: "l".into(),
                wait: true,
                value: Vec::new(),
            },
        };
        node.apply(acquire(holder, 1), 0, at(0));
        node.apply(acquire(waiter, 1), 0, at(0));
        let epoch = node.lead(1, at(1), at(1));
        node.apply(
            CommandKind::ExpireSession {
                session: holder,
                epoch,
            },
            node.role.stamp_ms(at(1)),
            at(1),
        );
        assert!(node.machine.holder("l").is_none(), "in lock-delay");
        assert!(node
            .role
            .due(&node.machine, Nanos(SEC + 299_000_000))
            .is_empty());
        let due = node.role.due(&node.machine, Nanos(SEC + 300_000_000));
        assert_eq!(due, vec![CommandKind::Tick]);
        assert!(
            node.role
                .due(&node.machine, Nanos(SEC + 350_000_000))
                .is_empty(),
            "one tick per retry period"
        );
    }

    #[test]
    fn one_scan_proposes_a_bounded_number_of_expiries() {
        let mut node = Node::new(0);
        for _ in 0..MAX_EXPIRIES_PER_SCAN + 10 {
            node.open(at(0));
        }
        node.lead(1, at(0), at(0));
        let first = node.role.due(&node.machine, at(11));
        assert_eq!(first.len(), MAX_EXPIRIES_PER_SCAN);
        assert_eq!(node.role.due(&node.machine, at(11)).len(), 10);
    }
}
