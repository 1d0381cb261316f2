//! The short fuzz run CI makes: every decoder, 100,000 mutated inputs (or 20
//! seconds) each from a fixed seed, so a run is the same every time; a
//! panic fails with what replays it. `PAXLOCK_FUZZ_SEED` picks another
//! seed, `PAXLOCK_FUZZ_ITERATIONS` a longer run.

use std::time::Duration;

use paxlock_fuzz::{fuzz, targets, Budget};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn no_decoder_panics_on_mutated_input() {
    let seed = env_u64("PAXLOCK_FUZZ_SEED", 1);
    let budget = Budget {
        iterations: env_u64("PAXLOCK_FUZZ_ITERATIONS", 100_000),
        time: Duration::from_secs(env_u64("PAXLOCK_FUZZ_SECONDS", 20)),
    };
    let mut findings = Vec::new();
    for target in targets::all() {
        match fuzz(&target, seed, budget) {
            Ok(report) => {
                // Mutation reached more than the seeds' own outcomes.
                assert!(report.outcomes >= 2, "{report:?}");
                eprintln!("{report:?}");
            }
            Err(finding) => findings.push(finding.to_string()),
        }
    }
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
