//! A Wing–Gong / Lowe linearizability checker for the history of one lock,
//! semaphore or read/write lock.
//!
//! The history is a set of [`Operation`]s, each with an invocation time, a
//! completion time (`None` when the outcome is unknown: the operation may
//! have taken effect at any point after its invocation, or never) and the
//! observed [`Outcome`]. The checker searches for a total order that (a)
//! respects real time — if `a` completed before `b` was invoked, `a` comes
//! first — and (b) is accepted by a sequential specification ([`Spec`]):
//! [`Model`], a lock with at most one holder whose fencing tokens strictly
//! increase across grants, or [`SharedModel`], a semaphore of `permits`
//! holders or a read/write lock (readers together, a writer alone), whose
//! grants' tokens strictly increase too.
//!
//! Search: depth-first over "which minimal operation linearizes next",
//! memoizing visited (linearized set, model state) pairs (Lowe's
//! improvement of Wing & Gong), with a step budget so it always terminates;
//! over budget it answers [`Verdict::Unknown`] rather than hanging.
//!
//! Conventions for the simulator:
//! - check each lock separately (operations on different locks commute);
//! - an operation completing at the same instant another is invoked counts
//!   as concurrent with it (ties are lenient);
//! - a blocking acquire is one operation from request to grant;
//! - when a client cancels a pending acquire, record the acquire as
//!   completed at the cancel's completion with [`Outcome::Unknown`], so it
//!   cannot be linearized after the cancel;
//! - record session close/expiry as [`Call::EndSession`] (the expiry at the
//!   instant a replica applied it).
//!
//! Unknown tokens: an acquire whose outcome is unknown may have granted a
//! token nobody saw. The model then only knows a lower bound for it, which
//! is exact for later grants; a `Stale` answer to a release naming a token
//! that might equal the unseen one is accepted (lenient, never a false
//! alarm).

use std::collections::{BTreeMap, HashSet};

/// Identifies the client (session) that issued an operation.
pub type ClientId = u64;

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Acquire (try or blocking).
    Acquire,
    /// Acquire a semaphore's permit (`write = false`) or a read/write lock
    /// for reading (`false`) or writing (`true`).
    AcquireShared {
        /// For writing.
        write: bool,
    },
    /// Release the grant with this token.
    Release {
        /// Token named.
        token: u64,
    },
    /// Check (renew) the grant with this token.
    Check {
        /// Token named.
        token: u64,
    },
    /// Cancel a pending acquire; releases the lock if already granted.
    Cancel,
    /// The client's session ended, releasing the lock if it held it.
    EndSession {
        /// Expired or revoked (lock-delay may make the lock busy for a
        /// while) rather than closed.
        expired: bool,
    },
    /// An administrator force-released the client's grant with this token
    /// (the force-release names the grant it takes): as an expiry, for
    /// this lock only. Observed (`Ended`), the client held that grant.
    ForceReleased {
        /// The grant taken.
        token: u64,
    },
}

/// What the client observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Acquire: granted with this token (also the idempotent re-grant).
    Granted {
        /// Fencing token.
        token: u64,
    },
    /// Acquire: the lock was busy (try-acquire).
    Busy,
    /// Release: done.
    Released,
    /// Check: the token is the current grant.
    Valid,
    /// Release/Check: the token is not this client's current grant.
    Stale,
    /// Cancel: `released` tells whether a grant was released.
    Cancelled {
        /// Whether the grant had happened and was released.
        released: bool,
    },
    /// EndSession: done.
    Ended,
    /// Not observed (timeout, crash): any result allowed.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// Issuing client.
    pub client: ClientId,
    /// What it asked for.
    pub call: Call,
    /// What it observed.
    pub outcome: Outcome,
    /// Invocation time (any monotone unit, e.g. true simulated ns).
    pub invoked_at: u64,
    /// Completion time, or `None` if it never completed.
    pub completed_at: Option<u64>,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid linearization exists.
    Linearizable,
    /// No linearization exists. `longest_prefix` is the longest valid
    /// sequence found (indices into the input), to start debugging from.
    NotLinearizable {
        /// Longest linearizable prefix found, as input indices.
        longest_prefix: Vec<usize>,
    },
    /// The step budget ran out before a decision.
    Unknown {
        /// Steps spent.
        steps: u64,
    },
    /// The history itself is malformed.
    InvalidHistory {
        /// Offending operation (input index).
        index: usize,
        /// Why.
        why: &'static str,
    },
}

/// A sequential specification the search checks a history against.
pub trait Spec: Clone + Eq + std::hash::Hash {
    /// Every state after `call` by `client` observed as `outcome`; empty
    /// if the outcome is impossible here.
    fn step(&self, client: ClientId, call: Call, outcome: Outcome) -> Vec<Self>;
}

impl Spec for Model {
    fn step(&self, client: ClientId, call: Call, outcome: Outcome) -> Vec<Model> {
        Model::step(self, client, call, outcome)
    }
}

/// The sequential specification: a lock with one holder and strictly
/// increasing fencing tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Model {
    /// Holder and its token (`None` if granted by an unseen acquire).
    holder: Option<(ClientId, Option<u64>)>,
    /// Lower bound on the greatest token granted so far (exact when every
    /// grant was seen). A new grant must exceed it.
    floor: u64,
    /// The last release was an expiry: lock-delay may report `Busy`.
    delayed: bool,
}

impl Model {
    /// Every state the lock can be in after `op` from `self`; empty if the
    /// observed outcome is impossible here.
    pub fn step(&self, client: ClientId, call: Call, outcome: Outcome) -> Vec<Model> {
        let mine = self.holder.filter(|(c, _)| *c == client);
        let unknown = outcome == Outcome::Unknown;
        let mut next = Vec::new();
        match call {
            // A lock history has no shared acquires.
            Call::AcquireShared { .. } => {}
            Call::Acquire => match (self.holder, mine) {
                (Some(_), Some((_, tok))) => match outcome {
                    Outcome::Granted { token } => {
                        if let Some(learned) = self.learn(client, tok, token) {
                            next.push(learned);
                        }
                    }
                    Outcome::Unknown => next.push(self.clone()),
                    _ => {}
                },
                (Some(_), None) => {
                    if matches!(outcome, Outcome::Busy | Outcome::Unknown) {
                        next.push(self.clone());
                    }
                }
                (None, _) => match outcome {
                    Outcome::Granted { token } if token > self.floor => next.push(Model {
                        holder: Some((client, Some(token))),
                        floor: token,
                        delayed: false,
                    }),
                    Outcome::Busy if self.delayed => next.push(self.clone()),
                    Outcome::Unknown => {
                        next.push(Model {
                            holder: Some((client, None)),
                            floor: self.floor.saturating_add(1),
                            delayed: false,
                        });
                        if self.delayed {
                            next.push(self.clone());
                        }
                    }
                    _ => {}
                },
            },
            Call::Release { token } | Call::Check { token } => {
                let ok = if matches!(call, Call::Release { .. }) {
                    Outcome::Released
                } else {
                    Outcome::Valid
                };
                let release = matches!(call, Call::Release { .. });
                match mine {
                    Some((_, tok)) => {
                        if outcome == ok || unknown {
                            if let Some(mut m) = self.learn(client, tok, token) {
                                if release {
                                    m.holder = None;
                                    m.delayed = false;
                                }
                                next.push(m);
                            }
                        }
                        // Stale is possible unless the token is known to match.
                        if (outcome == Outcome::Stale || unknown) && tok != Some(token) {
                            next.push(self.clone());
                        }
                    }
                    None => {
                        if outcome == Outcome::Stale || unknown {
                            next.push(self.clone());
                        }
                    }
                }
            }
            Call::Cancel => {
                let freed = Model {
                    holder: None,
                    floor: self.floor,
                    delayed: false,
                };
                match (mine.is_some(), outcome) {
                    (true, Outcome::Cancelled { released: true }) => next.push(freed),
                    (true, Outcome::Unknown) => next.push(freed),
                    (false, Outcome::Cancelled { released: false } | Outcome::Unknown) => {
                        next.push(self.clone())
                    }
                    _ => {}
                }
            }
            Call::ForceReleased { token } => {
                // Only the grant with `token` can be taken; taken, the lock
                // waits out a delay as after an expiry.
                if matches!(outcome, Outcome::Ended | Outcome::Unknown) {
                    if let Some(mut m) = mine.and_then(|(_, tok)| self.learn(client, tok, token)) {
                        m.holder = None;
                        m.delayed = true;
                        next.push(m);
                    }
                }
            }
            Call::EndSession { expired } => {
                if matches!(outcome, Outcome::Ended | Outcome::Unknown) {
                    if mine.is_some() {
                        next.push(Model {
                            holder: None,
                            floor: self.floor,
                            delayed: expired,
                        });
                    } else {
                        next.push(self.clone());
                    }
                }
            }
        }
        // An unknown outcome includes "never took effect" (the request was
        // lost, or a queued acquire was withdrawn before any grant), also
        // for operations that completed (a cancelled blocking acquire is
        // recorded as completed at the cancel): no change is always possible.
        if unknown && !next.contains(self) {
            next.push(self.clone());
        }
        next
    }

    /// The holder `client` (token `tok`, maybe unseen) shows token `token`:
    /// consistent if equal, or if unseen and not below the lower bound.
    fn learn(&self, client: ClientId, tok: Option<u64>, token: u64) -> Option<Model> {
        match tok {
            Some(t) if t == token => Some(self.clone()),
            Some(_) => None,
            None if token >= self.floor => Some(Model {
                holder: Some((client, Some(token))),
                floor: token,
                delayed: self.delayed,
            }),
            None => None,
        }
    }
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
}

/// What a history is of, for [`check_all_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOf {
    /// A lock: [`Model`].
    Lock,
    /// A semaphore of this many permits: [`SharedModel`].
    Semaphore(u32),
    /// A read/write lock: [`SharedModel`].
    ReadWrite,
}

/// A shared grant's token in [`SharedModel`]: seen (`Ok`), or the bounds
/// an unseen one lies within (`Err((min, max))`).
type GrantToken = Result<u64, (u64, u64)>;

/// The sequential specification of a semaphore or a read/write lock:
/// grants with strictly increasing tokens, at most `permits` at once (a
/// semaphore), or readers together and a writer alone. Queue order is not
/// modelled (a blocking acquire is one operation from request to grant;
/// the simulator checks FIFO on its own), so a try-acquire may find it
/// busy wherever a waiter could stand: a semaphore when full, a read/write
/// lock whenever anyone holds, either while a lock-delay may be in force.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedModel {
    /// `Some(permits)`: a semaphore; `None`: a read/write lock.
    permits: Option<u32>,
    /// Holders: for writing, and their grant's token (`Err((min, max))`:
    /// granted by an unseen acquire, its token within those bounds: above
    /// every token before it, below every token granted after it).
    holders: BTreeMap<ClientId, (bool, GrantToken)>,
    /// Lower bound on the greatest token granted so far.
    floor: u64,
    /// An expired or taken grant's lock-delay may still be in force.
    delayed: bool,
}

impl SharedModel {
    /// An unused semaphore (`Some(permits)`) or read/write lock (`None`).
    pub fn new(permits: Option<u32>) -> SharedModel {
        SharedModel {
            permits,
            holders: BTreeMap::new(),
            floor: 0,
            delayed: false,
        }
    }

    /// Whether a grant `write` (or not) fits beside the holders, lock-delays
    /// aside.
    fn fits(&self, write: bool) -> bool {
        match self.permits {
            Some(permits) => !write && self.holders.len() < permits as usize,
            None if write => self.holders.is_empty(),
            None => self.holders.values().all(|(w, _)| !w),
        }
    }

    /// Whether a grant proves every lock-delay over: one that any delay
    /// would block (a writer; the last free permit).
    fn clears_delays(&self, write: bool) -> bool {
        match self.permits {
            Some(permits) => self.holders.len() + 1 == permits as usize,
            None => write,
        }
    }

    fn granted(&self, client: ClientId, write: bool, token: Option<u64>) -> SharedModel {
        let mut m = self.clone();
        m.delayed = self.delayed && !self.clears_delays(write);
        let token = match token {
            Some(token) => {
                // Unseen grants before it drew lower tokens.
                for (_, held) in m.holders.values_mut() {
                    if let Err((_, max)) = held {
                        *max = (*max).min(token.saturating_sub(1));
                    }
                }
                m.floor = token;
                Ok(token)
            }
            None => {
                m.floor = self.floor.saturating_add(1);
                Err((m.floor, u64::MAX))
            }
        };
        m.holders.insert(client, (write, token));
        m
    }

    fn without(&self, client: ClientId, delayed: bool) -> SharedModel {
        let mut m = self.clone();
        m.holders.remove(&client);
        m.delayed |= delayed;
        m
    }

    /// `client`'s grant (token `tok`, maybe unseen) shows `token`.
    fn learn(&self, client: ClientId, tok: GrantToken, token: u64) -> Option<SharedModel> {
        match tok {
            Ok(t) if t == token => Some(self.clone()),
            Err((min, max)) if (min..=max).contains(&token) => {
                let mut m = self.clone();
                if let Some(held) = m.holders.get_mut(&client) {
                    held.1 = Ok(token);
                }
                m.floor = m.floor.max(token);
                Some(m)
            }
            Ok(_) | Err(_) => None,
        }
    }
}

impl Spec for SharedModel {
    fn step(&self, client: ClientId, call: Call, outcome: Outcome) -> Vec<SharedModel> {
        let mine = self.holders.get(&client).copied();
        let unknown = outcome == Outcome::Unknown;
        let mut next = Vec::new();
        match (call, mine) {
            // The same grant again (the other mode is refused: no change).
            (Call::AcquireShared { .. }, Some((_, tok))) => {
                if let Outcome::Granted { token } = outcome {
                    next.extend(self.learn(client, tok, token));
                }
            }
            (Call::AcquireShared { write }, None) => {
                let fits = self.fits(write);
                // A semaphore has waiters only while full (a free permit
                // goes to the first at once); a reader may find a writer
                // queued behind the readers that hold.
                let queued_writer = self.permits.is_none() && !self.holders.is_empty();
                let busy_possible = !fits || self.delayed || queued_writer;
                match outcome {
                    Outcome::Granted { token } if fits && token > self.floor => {
                        next.push(self.granted(client, write, Some(token)));
                    }
                    Outcome::Busy if busy_possible => next.push(self.clone()),
                    Outcome::Unknown if fits => next.push(self.granted(client, write, None)),
                    _ => {}
                }
            }
            // A shared history has no lock acquires.
            (Call::Acquire, _) => {}
            (Call::Release { token } | Call::Check { token }, _) => {
                let release = matches!(call, Call::Release { .. });
                let ok = if release {
                    Outcome::Released
                } else {
                    Outcome::Valid
                };
                match mine {
                    Some((_, tok)) => {
                        if outcome == ok || unknown {
                            if let Some(m) = self.learn(client, tok, token) {
                                next.push(if release { m.without(client, false) } else { m });
                            }
                        }
                        if (outcome == Outcome::Stale || unknown) && tok != Ok(token) {
                            next.push(self.clone());
                        }
                    }
                    None if outcome == Outcome::Stale || unknown => next.push(self.clone()),
                    None => {}
                }
            }
            (Call::Cancel, _) => match (mine.is_some(), outcome) {
                (true, Outcome::Cancelled { released: true } | Outcome::Unknown) => {
                    next.push(self.without(client, false))
                }
                (false, Outcome::Cancelled { released: false } | Outcome::Unknown) => {
                    next.push(self.clone())
                }
                _ => {}
            },
            (Call::ForceReleased { token }, _) => {
                if matches!(outcome, Outcome::Ended | Outcome::Unknown) {
                    if let Some(m) = mine.and_then(|(_, tok)| self.learn(client, tok, token)) {
                        next.push(m.without(client, true));
                    }
                }
            }
            (Call::EndSession { expired }, _) => {
                if matches!(outcome, Outcome::Ended | Outcome::Unknown) {
                    next.push(self.without(client, expired && mine.is_some()));
                }
            }
        }
        // As for a lock: an unknown outcome includes "never took effect".
        if unknown && !next.contains(self) {
            next.push(self.clone());
        }
        next
    }
}

/// Checks one history against the specification of what it is `of`.
pub fn check_history_of(ops: &[Operation], of: HistoryOf, max_steps: u64) -> Verdict {
    match of {
        HistoryOf::Lock => check_lock_history(ops, max_steps),
        HistoryOf::Semaphore(permits) => {
            check_history(ops, SharedModel::new(Some(permits)), max_steps)
        }
        HistoryOf::ReadWrite => check_history(ops, SharedModel::new(None), max_steps),
    }
}

/// Checks one lock's history with at most `max_steps` search steps.
pub fn check_lock_history(ops: &[Operation], max_steps: u64) -> Verdict {
    check_history(ops, Model::default(), max_steps)
}

/// Checks one history against `spec` (its initial state) with at most
/// `max_steps` search steps.
pub fn check_history<M: Spec>(ops: &[Operation], spec: M, max_steps: u64) -> Verdict {
    for (index, op) in ops.iter().enumerate() {
        if op.completed_at.is_some_and(|c| c < op.invoked_at) {
            return Verdict::InvalidHistory {
                index,
                why: "completed before it was invoked",
            };
        }
        if op.completed_at.is_none() && op.outcome != Outcome::Unknown {
            return Verdict::InvalidHistory {
                index,
                why: "never completed but has an observed outcome",
            };
        }
    }
    // Sorted by invocation so candidate scans can stop early.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].invoked_at);
    let sorted: Vec<Operation> = order.iter().map(|&i| ops[i]).collect();
    let must = sorted.iter().filter(|o| o.completed_at.is_some()).count();
    Search::new(&sorted, max_steps)
        .run(must, spec)
        .map_prefix(|p| p.into_iter().map(|i| order[i]).collect())
}

/// Checks every lock's history; returns the first lock that is not
/// [`Verdict::Linearizable`] with its verdict, or `Ok(())`.
pub fn check_all(
    histories: &BTreeMap<String, Vec<Operation>>,
    max_steps_per_lock: u64,
) -> Result<(), (String, Verdict)> {
    check_all_of(histories, |_| HistoryOf::Lock, max_steps_per_lock)
}

/// As [`check_all`], each history against the specification `of` its name.
pub fn check_all_of(
    histories: &BTreeMap<String, Vec<Operation>>,
    of: impl Fn(&str) -> HistoryOf,
    max_steps_per_lock: u64,
) -> Result<(), (String, Verdict)> {
    for (name, ops) in histories {
        match check_history_of(ops, of(name), max_steps_per_lock) {
            Verdict::Linearizable => {}
            other => return Err((name.clone(), other)),
        }
    }
    Ok(())
}

impl Verdict {
    fn map_prefix(self, f: impl FnOnce(Vec<usize>) -> Vec<usize>) -> Verdict {
        match self {
            Verdict::NotLinearizable { longest_prefix } => Verdict::NotLinearizable {
                longest_prefix: f(longest_prefix),
            },
            other => other,
        }
    }
}

struct Search<'a> {
    ops: &'a [Operation],
    max_steps: u64,
}

/// One level of the depth-first search: the choices left at this node.
struct Frame<M> {
    choices: Vec<(usize, M)>,
    next: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Operation], max_steps: u64) -> Self {
        Search { ops, max_steps }
    }

    /// All (operation, next state) pairs that may linearize next: the op is
    /// not yet linearized and no other unlinearized op completed before it
    /// was invoked.
    fn expand<M: Spec>(&self, lin: &Bits, model: &M) -> Vec<(usize, M)> {
        let min_complete = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| !lin.get(*i))
            .filter_map(|(_, o)| o.completed_at)
            .min()
            .unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.invoked_at > min_complete {
                break;
            }
            if lin.get(i) {
                continue;
            }
            for next in model.step(op.client, op.call, op.outcome) {
                out.push((i, next));
            }
        }
        out
    }

    fn run<M: Spec>(&self, must: usize, initial: M) -> Verdict {
        let n = self.ops.len();
        let mut lin = Bits::new(n);
        let mut model = initial;
        let mut done = 0usize; // completed ops linearized so far
        let mut path: Vec<(usize, M)> = Vec::new();
        let mut best: Vec<usize> = Vec::new();
        let mut visited: HashSet<(Bits, M)> = HashSet::new();
        let mut steps = 0u64;
        if must == 0 {
            return Verdict::Linearizable;
        }
        visited.insert((lin.clone(), model.clone()));
        let mut stack = vec![Frame {
            choices: self.expand(&lin, &model),
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            steps += 1;
            if steps > self.max_steps {
                return Verdict::Unknown { steps };
            }
            if let Some((op, next)) = top.choices.get(top.next).cloned() {
                top.next += 1;
                lin.set(op, true);
                if !visited.insert((lin.clone(), next.clone())) {
                    lin.set(op, false);
                    continue;
                }
                if self.ops[op].completed_at.is_some() {
                    done += 1;
                }
                path.push((op, std::mem::replace(&mut model, next)));
                if done == must {
                    return Verdict::Linearizable;
                }
                if path.len() > best.len() {
                    best = path.iter().map(|(i, _)| *i).collect();
                }
                stack.push(Frame {
                    choices: self.expand(&lin, &model),
                    next: 0,
                });
            } else {
                stack.pop();
                if let Some((op, prev)) = path.pop() {
                    lin.set(op, false);
                    if self.ops[op].completed_at.is_some() {
                        done -= 1;
                    }
                    model = prev;
                }
            }
        }
        Verdict::NotLinearizable {
            longest_prefix: best,
        }
    }
}

#[cfg(test)]
mod tests;
