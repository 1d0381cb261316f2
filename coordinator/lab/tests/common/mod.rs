//! What the lab's tests share: the lab binary, started on the `paxlock`
//! built beside it.

#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

/// `paxlock-lab SUBCOMMAND --paxlock-bin <the paxlock of this build>`.
///
/// Cargo gives a test the path of its own package's binaries only; the
/// `paxlock` binary is the coordinator's, built into the same folder by
/// `cargo test --workspace` (the README's test command). Naming it here,
/// rather than letting the lab look, makes a missing one a clear failure.
pub fn lab(subcommand: &str) -> Command {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_paxlock-lab"));
    let paxlock = lab.with_file_name("paxlock");
    assert!(
        paxlock.is_file(),
        "{} is missing: run the lab's tests with `cargo test --workspace`, which builds it",
        paxlock.display()
    );
    let mut command = Command::new(lab);
    command.arg(subcommand).arg("--paxlock-bin").arg(paxlock);
    command
}
