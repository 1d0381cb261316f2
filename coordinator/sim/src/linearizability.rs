//! A Wing–Gong / Lowe linearizability checker for the history of one lock.
//!
//! The history is a set of [`Operation`]s, each with an invocation time, a
//! completion time (`None` when the outcome is unknown: the operation may
//! have taken effect at any point after its invocation, or never) and the
//! observed [`Outcome`]. The checker searches for a total order that (a)
//! respects real time — if `a` completed before `b` was invoked, `a` comes
//! first — and (b) is accepted by the sequential specification [`Model`]:
//! a lock with at most one holder whose fencing tokens strictly increase
//! across grants.
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

/// Checks one lock's history with at most `max_steps` search steps.
pub fn check_lock_history(ops: &[Operation], max_steps: u64) -> Verdict {
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
        .run(must)
        .map_prefix(|p| p.into_iter().map(|i| order[i]).collect())
}

/// Checks every lock's history; returns the first lock that is not
/// [`Verdict::Linearizable`] with its verdict, or `Ok(())`.
pub fn check_all(
    histories: &BTreeMap<String, Vec<Operation>>,
    max_steps_per_lock: u64,
) -> Result<(), (String, Verdict)> {
    for (name, ops) in histories {
        match check_lock_history(ops, max_steps_per_lock) {
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
struct Frame {
    choices: Vec<(usize, Model)>,
    next: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Operation], max_steps: u64) -> Self {
        Search { ops, max_steps }
    }

    /// All (operation, next state) pairs that may linearize next: the op is
    /// not yet linearized and no other unlinearized op completed before it
    /// was invoked.
    fn expand(&self, lin: &Bits, model: &Model) -> Vec<(usize, Model)> {
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

    fn run(&self, must: usize) -> Verdict {
        let n = self.ops.len();
        let mut lin = Bits::new(n);
        let mut model = Model::default();
        let mut done = 0usize; // completed ops linearized so far
        let mut path: Vec<(usize, Model)> = Vec::new();
        let mut best: Vec<usize> = Vec::new();
        let mut visited: HashSet<(Bits, Model)> = HashSet::new();
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
