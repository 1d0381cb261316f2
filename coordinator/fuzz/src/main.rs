//! `paxlock-fuzz`: mutation fuzzing of Paxlock's decoders (see the
//! library's docs). Prints one line per target; on a panic, what replays it,
//! and exits 1.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use paxlock_fuzz::{fuzz, targets, Budget};

/// Fuzz every decoder that reads bytes from outside a node.
#[derive(Debug, Parser)]
#[command(name = "paxlock-fuzz", version, about)]
struct Args {
    /// Fuzz only this target (see --list).
    #[arg(long)]
    target: Option<String>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Inputs to try per target.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Time to spend per target, at most.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time: Duration,
    /// The run's seed (the same seed replays the same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let all = targets::all();
    if args.list {
        for target in &all {
            println!("{}", target.name);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<_> = all
        .iter()
        .filter(|t| args.target.as_deref().is_none_or(|name| name == t.name))
        .collect();
    if chosen.is_empty() {
        eprintln!("error: no target named {:?}; see --list", args.target);
        return ExitCode::from(2);
    }
    // Findings are reported once, below, not by the default hook too.
    std::panic::set_hook(Box::new(|_| {}));
    let budget = Budget {
        iterations: args.iterations,
        time: args.time,
    };
    for target in chosen {
        match fuzz(target, args.seed, budget) {
            Ok(report) => println!(
                "{:<18} {:>10} inputs in {:>6.1}s ({:>8.0}/s), {:>4} outcomes, corpus {}",
                report.target,
                report.iterations,
                report.elapsed.as_secs_f64(),
                report.iterations as f64 / report.elapsed.as_secs_f64().max(1e-9),
                report.outcomes,
                report.corpus
            ),
            Err(finding) => {
                eprintln!("FINDING: {finding}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
