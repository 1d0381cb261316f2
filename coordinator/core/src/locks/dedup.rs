//! The exactly-once table of one session (Ongaro's thesis §6.3): recorded
//! replies by request id, forgotten as the client acknowledges them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::locks::command::RequestId;
use crate::locks::error::CommandError;
use crate::locks::machine::Reply;

/// A recorded answer: exactly what the first apply returned.
pub type RecordedReply = Result<Reply, CommandError>;

/// What the table knows about a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Below the acknowledged floor: the reply is gone.
    Acked {
        /// The floor.
        floor: RequestId,
    },
    /// Already applied; here is the reply.
    Recorded(RecordedReply),
    /// Not seen yet.
    New,
}

/// Recorded replies of one session, bounded by the caller's limit.
///
/// A client acknowledges with a floor (`below`) and the list of its
/// still-running waits under it (`waiting`: blocking acquires and
/// campaigns, which can take minutes). Without that list one long wait
/// would pin the floor, and every later reply of the session would stay
/// recorded until the session ran out of room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupTable {
    /// Every request id below this that has no reply here was
    /// acknowledged by the client.
    floor: u64,
    /// Replies the client has not acknowledged: ids at or above the floor,
    /// and the replies of waits the client still runs below it.
    replies: BTreeMap<u64, RecordedReply>,
}

impl DedupTable {
    /// Looks a request id up. A kept reply answers even below the floor:
    /// that is a wait the client still runs, and may retry.
    pub fn lookup(&self, request_id: RequestId) -> Lookup {
        if let Some(reply) = self.replies.get(&request_id.0) {
            return Lookup::Recorded(reply.clone());
        }
        if request_id.0 < self.floor {
            return Lookup::Acked {
                floor: RequestId(self.floor),
            };
        }
        Lookup::New
    }

    /// Whether the session has issued a request after `id`: a reply above
    /// it is recorded, or the client acknowledged beyond `id + 1` (which it
    /// only does in a later request). Used to recognise stale abandons.
    pub fn moved_past(&self, id: RequestId) -> bool {
        let next = id.0.saturating_add(1);
        self.floor > next || self.replies.range(next..).next().is_some()
    }

    /// Applies one request's acknowledgement: the client had the answers
    /// of every request below `below` except those in `waiting`. Forgets
    /// those answers and raises the floor (never lowers it).
    ///
    /// Copies of requests are applied in log order, not in the order the
    /// client sent them, so an acknowledgement may be older than one
    /// applied before it; it then only forgets less. A wait in `waiting`
    /// with no reply here has not been applied yet: the floor stops below
    /// it, or its first application would be refused as acknowledged, and
    /// so do the forgotten replies, or a retry of one of them above the
    /// floor would be applied twice.
    pub fn acknowledge(&mut self, below: RequestId, waiting: &[RequestId]) {
        let unapplied_wait = waiting
            .iter()
            .map(|w| w.0)
            .filter(|w| *w >= self.floor && !self.replies.contains_key(w))
            .min();
        let below = unapplied_wait.map_or(below.0, |w| w.min(below.0));
        self.floor = self.floor.max(below);
        let acknowledged = |id: u64| id < below && !waiting.contains(&RequestId(id));
        // Most requests forget nothing: look before rebuilding the map.
        if self.replies.range(..below).any(|(id, _)| acknowledged(*id)) {
            self.replies.retain(|id, _| !acknowledged(*id));
        }
    }

    /// Fences a withdrawn wait (an `Abandon`): its reply is forgotten and
    /// the floor passes it, so a delayed copy is refused as acknowledged.
    /// The other waits the client still runs below it keep their replies.
    pub fn withdraw(&mut self, request_id: RequestId) {
        self.replies.remove(&request_id.0);
        self.floor = self.floor.max(request_id.0.saturating_add(1));
    }

    /// Whether one more reply fits under `max`.
    pub fn has_room(&self, max: u32) -> bool {
        self.replies.len() < max as usize
    }

    /// Records the reply of a newly applied request.
    pub fn record(&mut self, request_id: RequestId, reply: RecordedReply) {
        self.replies.insert(request_id.0, reply);
    }

    /// The recorded replies, in request-id order.
    pub fn replies(&self) -> impl Iterator<Item = &RecordedReply> {
        self.replies.values()
    }

    /// Number of recorded replies.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether no reply is recorded.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The acknowledged floor.
    pub fn floor(&self) -> RequestId {
        RequestId(self.floor)
    }

    /// The floor and every recorded reply converted by `convert`: a
    /// snapshot layout's view of the table.
    pub(crate) fn to_parts<R>(
        &self,
        convert: impl Fn(&RecordedReply) -> R,
    ) -> (u64, BTreeMap<u64, R>) {
        let replies = self
            .replies
            .iter()
            .map(|(id, r)| (*id, convert(r)))
            .collect();
        (self.floor, replies)
    }

    /// A table from a snapshot layout's floor and replies.
    pub(crate) fn from_parts(floor: u64, replies: BTreeMap<u64, RecordedReply>) -> DedupTable {
        DedupTable { floor, replies }
    }

    /// Test helper: forget one recorded reply, to undo a documented
    /// bookkeeping effect when comparing states.
    #[cfg(test)]
    pub(crate) fn forget(&mut self, request_id: RequestId) {
        self.replies.remove(&request_id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_replies_are_forgotten_and_reported_as_acked() {
        let mut t = DedupTable::default();
        t.record(RequestId(1), Ok(Reply::Done));
        t.record(RequestId(2), Ok(Reply::Done));
        t.acknowledge(RequestId(2), &[]);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.lookup(RequestId(1)),
            Lookup::Acked {
                floor: RequestId(2)
            }
        );
        assert_eq!(t.lookup(RequestId(2)), Lookup::Recorded(Ok(Reply::Done)));
        assert_eq!(t.lookup(RequestId(3)), Lookup::New);
    }

    #[test]
    fn ack_never_lowers_the_floor() {
        let mut t = DedupTable::default();
        t.acknowledge(RequestId(5), &[]);
        t.acknowledge(RequestId(3), &[]);
        assert_eq!(t.floor(), RequestId(5));
    }

    fn queued() -> RecordedReply {
        Ok(Reply::Queued { position: 1 })
    }

    #[test]
    fn a_running_wait_keeps_its_reply_while_later_replies_are_forgotten() {
        let mut t = DedupTable::default();
        t.record(RequestId(1), queued());
        for id in 2..200 {
            t.acknowledge(RequestId(id), &[RequestId(1)]);
            t.record(RequestId(id), Ok(Reply::Done));
            assert!(t.len() <= 2, "{} replies kept at request {id}", t.len());
        }
        // A retry of the wait still finds it; an acknowledged id does not.
        assert_eq!(t.lookup(RequestId(1)), Lookup::Recorded(queued()));
        assert!(matches!(t.lookup(RequestId(5)), Lookup::Acked { .. }));
        // Once the client stops listing it, the wait's reply goes too.
        t.acknowledge(RequestId(200), &[]);
        assert!(matches!(t.lookup(RequestId(1)), Lookup::Acked { .. }));
    }

    #[test]
    fn a_wait_not_applied_yet_holds_the_floor_and_the_replies_above_it() {
        let mut t = DedupTable::default();
        // The client sent wait 1 and request 2, had 2 answered, and sends
        // 3, listing 1; 1 is still on its way (a retry through another node).
        t.record(RequestId(2), Ok(Reply::Done));
        t.acknowledge(RequestId(3), &[RequestId(1)]);
        assert_eq!(t.lookup(RequestId(1)), Lookup::New, "the wait is refused");
        assert_eq!(
            t.lookup(RequestId(2)),
            Lookup::Recorded(Ok(Reply::Done)),
            "a retry of 2 would be applied twice"
        );
        t.record(RequestId(1), queued());
        t.acknowledge(RequestId(3), &[RequestId(1)]);
        assert!(matches!(t.lookup(RequestId(2)), Lookup::Acked { .. }));
        assert_eq!(t.lookup(RequestId(1)), Lookup::Recorded(queued()));
    }

    #[test]
    fn an_older_acknowledgement_applied_late_forgets_nothing_newer_kept() {
        let mut t = DedupTable::default();
        t.record(RequestId(4), queued());
        t.acknowledge(RequestId(9), &[RequestId(4)]);
        // Sent before wait 4 existed, applied after: 4 is not in its list.
        t.acknowledge(RequestId(3), &[]);
        assert_eq!(t.lookup(RequestId(4)), Lookup::Recorded(queued()));
        // A stale list naming a wait that is over brings nothing back.
        t.acknowledge(RequestId(10), &[]);
        t.acknowledge(RequestId(9), &[RequestId(4)]);
        assert!(matches!(t.lookup(RequestId(4)), Lookup::Acked { .. }));
        assert_eq!(t.floor(), RequestId(10));
    }

    #[test]
    fn a_withdrawn_wait_is_fenced_and_other_waits_keep_their_replies() {
        let mut t = DedupTable::default();
        t.record(RequestId(1), queued());
        t.record(RequestId(3), queued());
        t.withdraw(RequestId(3));
        assert!(matches!(t.lookup(RequestId(3)), Lookup::Acked { .. }));
        assert_eq!(t.lookup(RequestId(1)), Lookup::Recorded(queued()));
        assert_eq!(t.lookup(RequestId(4)), Lookup::New);
    }

    /// One request copy as sent: retries resend it unchanged.
    #[derive(Debug, Clone)]
    struct Sent {
        id: u64,
        below: u64,
        waiting: Vec<RequestId>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send { wait: bool },
        Retry(usize),
        Deliver(usize),
        Answer(usize),
        GiveUp(usize),
    }

    fn arb_step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<bool>().prop_map(|wait| Step::Send { wait }),
            2 => any::<usize>().prop_map(Step::Retry),
            6 => any::<usize>().prop_map(Step::Deliver),
            3 => any::<usize>().prop_map(Step::Answer),
            1 => any::<usize>().prop_map(Step::GiveUp),
        ]
    }

    /// The client's rule (`paxlock_client_rules::acknowledgement`) against this
    /// table, with copies applied in any order and retried: the model of
    /// `StateMachine::apply_client`'s bookkeeping.
    struct World {
        table: DedupTable,
        next_id: u64,
        in_flight: BTreeMap<u64, bool>,
        requests: BTreeMap<u64, Sent>,
        pool: Vec<Sent>,
        applied: std::collections::BTreeSet<u64>,
    }

    impl World {
        fn apply(&mut self, copy: Sent) -> Result<(), String> {
            let id = RequestId(copy.id);
            let below = RequestId(copy.below.min(copy.id));
            match self.table.lookup(id) {
                Lookup::Recorded(_) => self.table.acknowledge(below, &copy.waiting),
                Lookup::Acked { floor } => {
                    if self.in_flight.contains_key(&copy.id) {
                        return Err(format!(
                            "request {} refused under floor {floor:?} while its client waits for it",
                            copy.id
                        ));
                    }
                }
                Lookup::New => {
                    if !self.applied.insert(copy.id) {
                        return Err(format!("request {} applied twice", copy.id));
                    }
                    self.table.acknowledge(below, &copy.waiting);
                    self.table.record(id, Ok(Reply::Done));
                }
            }
            Ok(())
        }

        fn step(&mut self, step: Step) -> Result<(), String> {
            match step {
                Step::Send { wait } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.in_flight.insert(id, wait);
                    let (below, waiting) =
                        paxlock_client_rules::acknowledgement(&self.in_flight, id);
                    let sent = Sent {
                        id,
                        below,
                        waiting: waiting.into_iter().map(RequestId).collect(),
                    };
                    self.requests.insert(id, sent.clone());
                    self.pool.push(sent);
                }
                Step::Retry(k) => {
                    if let Some(id) = nth(self.in_flight.keys(), k) {
                        self.pool.push(self.requests[&id].clone());
                    }
                }
                Step::Deliver(k) => {
                    if !self.pool.is_empty() {
                        let copy = self.pool.swap_remove(k % self.pool.len());
                        self.apply(copy)?;
                    }
                }
                Step::Answer(k) => {
                    let answerable = self.in_flight.keys().filter(|id| self.applied.contains(id));
                    if let Some(id) = nth(answerable, k) {
                        self.in_flight.remove(&id);
                    }
                }
                Step::GiveUp(k) => {
                    if let Some(id) = nth(self.in_flight.keys(), k) {
                        self.in_flight.remove(&id);
                    }
                }
            }
            Ok(())
        }
    }

    fn nth<'a>(ids: impl Iterator<Item = &'a u64> + Clone, k: usize) -> Option<u64> {
        let count = ids.clone().count();
        (count > 0).then(|| ids.copied().nth(k % count)).flatten()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Exactly once under any delivery order: no request applied twice,
        /// none refused while its client still waits for it, and once the
        /// client has its answers, one more request leaves only its own.
        #[test]
        fn acknowledgements_around_waits_keep_requests_exactly_once(
            steps in proptest::collection::vec(arb_step(), 1..120)
        ) {
            let mut world = World {
                table: DedupTable::default(),
                next_id: 1,
                in_flight: BTreeMap::new(),
                requests: BTreeMap::new(),
                pool: Vec::new(),
                applied: Default::default(),
            };
            for step in steps {
                world.step(step).map_err(proptest::test_runner::TestCaseError::fail)?;
            }
            while !world.pool.is_empty() {
                world.step(Step::Deliver(0)).map_err(proptest::test_runner::TestCaseError::fail)?;
            }
            world.in_flight.clear();
            world.step(Step::Send { wait: false }).map_err(proptest::test_runner::TestCaseError::fail)?;
            world.step(Step::Deliver(0)).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(world.table.len(), 1, "{:?}", world.table);
        }
    }
}
