//! The fault schedule: a sequence of episodes drawn from a seed, so a
//! failing run names the seed that replays the same faults in the same
//! order (timing on real processes still varies).

use std::time::Duration;

use super::proxy::{LinkFaults, Party};
use paxlock_sim::rng::SimRng;

/// Which node a process or isolation fault hits, resolved when injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whoever leads at that moment.
    Leader,
    /// A node that does not lead (the n-th, modulo their number).
    Follower(usize),
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Random loss, delay/reordering or duplication on some links.
    Links {
        /// What kind, for the summary.
        kind: &'static str,
        /// The affected directed links.
        links: Vec<(Party, Party)>,
        /// What happens on them.
        faults: LinkFaults,
    },
    /// The nodes in `side` cannot talk to the others (clients reach all).
    Partition {
        /// The minority side.
        side: Vec<u64>,
    },
    /// Packets from `from` to `to` are lost; the other direction works.
    OneWay {
        /// Sender whose packets are lost.
        from: u64,
        /// Receiver.
        to: u64,
    },
    /// A node is cut off from its peers and from clients.
    Isolate(Target),
    /// SIGKILL, restart after `down`.
    Kill(Target, Duration),
    /// SIGSTOP for the duration, then SIGCONT.
    Stop(Target, Duration),
    /// A lock worker freezes (its whole runtime, keepalives included)
    /// between checking its lease and writing.
    PauseWorker(usize, Duration),
    /// An administrator force-releases the grant it sees on one of the
    /// workers' locks (the n-th, modulo their number).
    ForceRelease(usize),
    /// An administrator revokes the session of a lock holder it sees (the
    /// n-th, modulo their number).
    Revoke(usize),
    /// An administrator replaces a member by a spare node: adds it as a
    /// learner, promotes it, removes the member (skipped once no spare is
    /// left).
    Replace(Target),
    /// An administrator grows three members to five with two spare nodes,
    /// or shrinks five to three, removing the target first (skipped when
    /// neither can be done).
    Resize(Target),
}

impl Fault {
    /// The kind, for counting in the summary.
    pub fn kind(&self) -> String {
        let target = |t: &Target| match t {
            Target::Leader => "leader",
            Target::Follower(_) => "follower",
        };
        match self {
            Fault::Links { kind, .. } => format!("links: {kind}"),
            Fault::Partition { .. } => "partition: symmetric".into(),
            Fault::OneWay { .. } => "partition: one-way".into(),
            Fault::Isolate(t) => format!("isolate {}", target(t)),
            Fault::Kill(t, _) => format!("SIGKILL+restart {}", target(t)),
            Fault::Stop(t, d) => format!("SIGSTOP {} {}", target(t), pause_class(*d)),
            Fault::PauseWorker(..) => "worker paused past TTL".into(),
            Fault::ForceRelease(_) => "admin: force-release".into(),
            Fault::Revoke(_) => "admin: revoke a holder".into(),
            Fault::Replace(t) => format!("membership: replace {}", target(t)),
            Fault::Resize(_) => "membership: grow or shrink".into(),
        }
    }
}

fn pause_class(d: Duration) -> &'static str {
    if d >= STOP_PAST_TTL {
        "> client TTL"
    } else {
        "> election timeout"
    }
}

/// One episode: the fault, how long it lasts, the quiet gap after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// What is injected.
    pub fault: Fault,
    /// How long it stays.
    pub hold: Duration,
    /// Quiet time after it is undone.
    pub gap: Duration,
}

/// The workers' session TTL: SIGSTOPs of this length or more outlast it.
pub const WORKER_TTL: Duration = Duration::from_secs(2);
const STOP_PAST_TTL: Duration = Duration::from_millis(3_000);

/// What the schedule may draw from.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Node ids.
    pub nodes: Vec<u64>,
    /// Lock workers that can be paused.
    pub lock_workers: Vec<usize>,
    /// Whether delay and duplication are available (loopback proxies).
    pub delay: bool,
    /// Episodes to draw (the run stops drawing when time is up).
    pub count: usize,
    /// Whether spare nodes can replace members (membership faults).
    pub spares: bool,
}

/// Draws the episodes for `seed`.
pub fn draw(seed: u64, spec: &ScheduleSpec) -> Vec<Episode> {
    let mut rng = SimRng::new(seed);
    (0..spec.count).map(|_| episode(&mut rng, spec)).collect()
}

fn ms(rng: &mut SimRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.range(lo, hi))
}

fn episode(rng: &mut SimRng, spec: &ScheduleSpec) -> Episode {
    let n = spec.nodes.len();
    let pick_target = |rng: &mut SimRng| {
        if rng.chance_ppm(500_000) {
            Target::Leader
        } else {
            Target::Follower(rng.index(n))
        }
    };
    let hold = ms(rng, 1_500, 5_000);
    let gap = ms(rng, 300, 1_500);
    let fault = loop {
        let fault = match rng.index(14) {
            0..=2 => {
                let Some(f) = link_fault(rng, spec) else {
                    continue;
                };
                f
            }
            3 => {
                // A minority: one node, or two of five.
                let size = if n >= 5 && rng.chance_ppm(500_000) {
                    2
                } else {
                    1
                };
                let mut side = Vec::new();
                while side.len() < size {
                    let id = spec.nodes[rng.index(n)];
                    if !side.contains(&id) {
                        side.push(id);
                    }
                }
                side.sort_unstable();
                Fault::Partition { side }
            }
            4 => {
                let from = spec.nodes[rng.index(n)];
                let to = spec.nodes[rng.index(n)];
                if from == to {
                    continue;
                }
                Fault::OneWay { from, to }
            }
            5 => Fault::Isolate(pick_target(rng)),
            6 => Fault::Kill(pick_target(rng), ms(rng, 500, 4_000)),
            7 => {
                // Longer than the election timeout (0.7–1.4 s) but shorter
                // than the workers' TTL, or longer than both.
                let length = if rng.chance_ppm(500_000) {
                    ms(rng, 1_600, 2_500)
                } else {
                    ms(rng, 3_000, 5_000)
                };
                Fault::Stop(pick_target(rng), length)
            }
            8 | 9 => {
                if spec.lock_workers.is_empty() {
                    continue;
                }
                let worker = spec.lock_workers[rng.index(spec.lock_workers.len())];
                Fault::PauseWorker(worker, ms(rng, 3_000, 5_000))
            }
            10 if !spec.lock_workers.is_empty() => Fault::ForceRelease(rng.index(64)),
            11 if !spec.lock_workers.is_empty() => Fault::Revoke(rng.index(64)),
            12 if spec.spares => Fault::Replace(pick_target(rng)),
            13 if spec.spares => Fault::Resize(pick_target(rng)),
            _ => continue,
        };
        break fault;
    };
    Episode { fault, hold, gap }
}

/// Loss, delay with reordering, or duplication on a random half of the
/// directed links (peers and clients).
fn link_fault(rng: &mut SimRng, spec: &ScheduleSpec) -> Option<Fault> {
    let mut parties: Vec<Party> = spec.nodes.iter().map(|&id| Party::Node(id)).collect();
    parties.push(Party::Clients);
    let mut links = Vec::new();
    for &from in &parties {
        for &to in &parties {
            if from != to
                && !(from == Party::Clients && to == Party::Clients)
                && rng.chance_ppm(500_000)
            {
                links.push((from, to));
            }
        }
    }
    if links.is_empty() {
        return None;
    }
    let (kind, faults) = match rng.index(if spec.delay { 4 } else { 1 }) {
        0 => (
            "loss",
            LinkFaults {
                drop_ppm: rng.range(50_000, 400_000),
                ..LinkFaults::default()
            },
        ),
        1 => (
            "delay",
            LinkFaults {
                delay: ms(rng, 5, 80),
                jitter: ms(rng, 0, 10),
                ..LinkFaults::default()
            },
        ),
        2 => (
            "reorder",
            LinkFaults {
                jitter: ms(rng, 10, 60),
                ..LinkFaults::default()
            },
        ),
        _ => (
            "duplicate",
            LinkFaults {
                duplicate_ppm: rng.range(100_000, 500_000),
                ..LinkFaults::default()
            },
        ),
    };
    Some(Fault::Links {
        kind,
        links,
        faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(delay: bool) -> ScheduleSpec {
        ScheduleSpec {
            nodes: vec![1, 2, 3],
            lock_workers: vec![0, 1],
            delay,
            count: 400,
            spares: delay,
        }
    }

    #[test]
    fn same_seed_same_schedule_and_every_kind_appears() {
        let a = draw(42, &spec(true));
        assert_eq!(a, draw(42, &spec(true)));
        assert_ne!(a, draw(43, &spec(true)));
        let kinds: std::collections::BTreeSet<String> = a.iter().map(|e| e.fault.kind()).collect();
        for kind in [
            "links: loss",
            "links: delay",
            "links: reorder",
            "links: duplicate",
            "partition: symmetric",
            "partition: one-way",
            "isolate leader",
            "isolate follower",
            "SIGKILL+restart leader",
            "SIGKILL+restart follower",
            "SIGSTOP leader > election timeout",
            "SIGSTOP follower > client TTL",
            "worker paused past TTL",
            "admin: force-release",
            "admin: revoke a holder",
            "membership: replace leader",
            "membership: replace follower",
            "membership: grow or shrink",
        ] {
            assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
        }
        // Without spare nodes, no replacement is drawn.
        let without = ScheduleSpec {
            spares: false,
            ..spec(true)
        };
        assert!(draw(42, &without)
            .iter()
            .all(|e| !matches!(e.fault, Fault::Replace(_) | Fault::Resize(_))));
    }

    #[test]
    fn without_proxies_no_delay_or_duplication_is_drawn() {
        for e in draw(7, &spec(false)) {
            if let Fault::Links { faults, .. } = e.fault {
                assert!(faults.delay.is_zero() && faults.jitter.is_zero());
                assert_eq!(faults.duplicate_ppm, 0);
            }
        }
    }

    #[test]
    fn worker_pauses_outlast_the_worker_ttl() {
        for e in draw(9, &spec(true)) {
            if let Fault::PauseWorker(_, d) = e.fault {
                assert!(d > WORKER_TTL);
            }
        }
    }
}
