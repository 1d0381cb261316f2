//! A mutation fuzzer for Paxlock's decoders, on the stable toolchain.
//!
//! Every decoder that reads bytes a node did not make itself is a
//! [`Target`]: client requests, peer messages (protobuf, then the peer
//! codec), the proposal envelope and the command inside, log commands, WAL
//! frames and the acceptor records in them, snapshot files and the state
//! machine they restore, and the data directory's identity file. Each is
//! given valid encodings to start from (its seeds), then inputs made from
//! them by mutation (bit flips, interesting bytes, inserted, deleted,
//! duplicated and spliced runs, truncation). A target must answer every
//! input with a value or a typed error: a panic is a finding, reported
//! with the seed and iteration that replay it and the input's bytes.
//!
//! Guidance is coarse but free: an input whose outcome (which value kind or
//! which error) was not seen before joins the corpus, so inputs that get
//! deeper into a decoder are mutated further. It is not coverage-guided
//! (that needs a nightly toolchain's sanitizer flags); what it finds is
//! every panic reachable by a few mutations of valid input.

#![forbid(unsafe_code)]

pub mod targets;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Most bytes an input grows to: every decoder's own caps are far above
/// what mutation reaches, and larger inputs only slow the run.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// Most inputs a target's corpus keeps.
pub const MAX_CORPUS: usize = 4096;

/// One decoder under test.
pub struct Target {
    /// Its name (`paxlock-fuzz --target NAME`).
    pub name: &'static str,
    /// Valid encodings to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Decodes `input` (and whatever the decoded value leads to) and says
    /// what came of it, as a short label: the value's kind or the error's.
    pub run: fn(&[u8]) -> String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Inputs tried.
    pub iterations: u64,
    /// Distinct outcomes seen.
    pub outcomes: usize,
    /// Inputs kept to mutate further.
    pub corpus: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// A panic: what replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The target.
    pub target: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// The iteration that panicked.
    pub iteration: u64,
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.input.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "{} panicked at iteration {} of seed {}: {}\n  input ({} bytes): {hex}\n  replay: paxlock-fuzz --target {} --seed {} --iterations {}",
            self.target,
            self.iteration,
            self.seed,
            self.message,
            self.input.len(),
            self.target,
            self.seed,
            self.iteration + 1
        )
    }
}

/// How long a run goes on: whichever of the two ends it first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Inputs to try.
    pub iterations: u64,
    /// Time to spend.
    pub time: Duration,
}

/// Fuzzes `target` from `seed` within `budget`.
pub fn fuzz(target: &Target, seed: u64, budget: Budget) -> Result<Report, Box<Finding>> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut outcomes = BTreeSet::new();
    let mut iteration = 0;
    while iteration < budget.iterations && started.elapsed() < budget.time {
        let input = if iteration < corpus.len() as u64 {
            corpus[iteration as usize].clone()
        } else {
            let parent = &corpus[pick(&mut rng, corpus.len())];
            let other = &corpus[pick(&mut rng, corpus.len())];
            mutate(&mut rng, parent, other)
        };
        match catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            Ok(outcome) => {
                if outcomes.insert(outcome) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                return Err(Box::new(Finding {
                    target: target.name,
                    seed,
                    iteration,
                    input,
                    message,
                }));
            }
        }
        iteration += 1;
    }
    Ok(Report {
        target: target.name,
        iterations: iteration,
        outcomes: outcomes.len(),
        corpus: corpus.len(),
        elapsed: started.elapsed(),
    })
}

fn pick(rng: &mut ChaCha8Rng, len: usize) -> usize {
    (rng.next_u64() % len.max(1) as u64) as usize
}

/// Bytes decoders treat specially: lengths, varint continuations, signs.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x10];

/// One to four mutations of `parent` (`other` for splices).
pub fn mutate(rng: &mut ChaCha8Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = parent.to_vec();
    let rounds = 1 + pick(rng, 4);
    for _ in 0..rounds {
        let len = out.len();
        match rng.next_u32() % 8 {
            0 if len > 0 => {
                let at = pick(rng, len);
                out[at] ^= 1 << (rng.next_u32() % 8);
            }
            1 if len > 0 => {
                let at = pick(rng, len);
                out[at] = INTERESTING[pick(rng, INTERESTING.len())];
            }
            2 => {
                let at = pick(rng, len + 1);
                let n = 1 + pick(rng, 8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u32() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = pick(rng, len);
                let n = 1 + pick(rng, (len - at).min(16));
                out.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = pick(rng, len);
                let n = 1 + pick(rng, (len - at).min(32));
                let run = out[at..at + n].to_vec();
                let to = pick(rng, len + 1);
                out.splice(to..to, run);
            }
            5 if len > 0 => out.truncate(pick(rng, len)),
            6 if !other.is_empty() => {
                let from = pick(rng, other.len());
                let n = 1 + pick(rng, (other.len() - from).min(64));
                let at = pick(rng, len + 1);
                let end = (at + n).min(len);
                out.splice(at..end, other[from..from + n].iter().copied());
            }
            _ if len > 0 => {
                // A varint-sized field set to its largest.
                let at = pick(rng, len);
                let end = (at + 5).min(len);
                for b in &mut out[at..end] {
                    *b = 0xff;
                }
            }
            _ => out.push(rng.next_u32() as u8),
        }
    }
    out.truncate(MAX_INPUT_BYTES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_is_found_and_the_seed_replays_it() {
        let target = Target {
            name: "test-panics-on-ff",
            seeds: || vec![vec![1, 2, 3]],
            run: |input| {
                assert!(!input.contains(&0xff), "found the byte");
                "ok".into()
            },
        };
        let budget = Budget {
            iterations: 100_000,
            time: Duration::from_secs(60),
        };
        let finding = fuzz(&target, 7, budget).expect_err("no finding");
        assert!(finding.input.contains(&0xff));
        assert!(finding.message.contains("found the byte"));
        let replay = Budget {
            iterations: finding.iteration + 1,
            ..budget
        };
        let again = fuzz(&target, 7, replay).expect_err("the seed did not replay it");
        assert_eq!(again.input, finding.input);
    }
}
