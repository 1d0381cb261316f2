//! The launcher starts a node binary the way it understands: it asks
//! `serve --help` which flags there are, so an older release (without
//! `--exit-with-parent`, say) is not handed a flag it would refuse.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use paxlock_launcher::{LaunchError, NodeBinary};

/// Held by a test while it writes a script and runs it. A script cannot be
/// executed while any process holds it open for writing (ETXTBSY), and a
/// child forked by the other test's probe inherits this test's write
/// descriptor until it execs: the two tests must not overlap.
fn one_script_at_a_time() -> MutexGuard<'static, ()> {
    static SCRIPTS: Mutex<()> = Mutex::new(());
    SCRIPTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fake `paxlock` whose `serve --help` prints `help` (and exits
/// `status`).
fn fake_paxlock(dir: &Path, help: &str, status: u8) -> std::io::Result<PathBuf> {
    let path = dir.join("paxlock");
    let script = format!("#!/bin/sh\ncat <<'HELP'\n{help}\nHELP\nexit {status}\n");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[test]
fn a_binary_is_started_only_with_the_flags_its_help_lists() {
    let _scripts = one_script_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let current = fake_paxlock(
        dir.path(),
        "Usage: paxlock serve [OPTIONS] --config <CONFIG>\n  --worker-threads <N>\n  --exit-with-parent",
        0,
    )
    .unwrap();
    let binary = NodeBinary::probe(&current).unwrap();
    assert!(binary.exits_with_parent() && binary.takes_worker_threads());

    let older = tempfile::tempdir().unwrap();
    let older = fake_paxlock(
        older.path(),
        "Usage: paxlock serve [OPTIONS] --config <CONFIG>\n  --worker-threads <N>",
        0,
    )
    .unwrap();
    let binary = NodeBinary::probe(&older).unwrap();
    assert!(!binary.exits_with_parent());
    assert!(binary.takes_worker_threads());
}

#[test]
fn something_that_is_not_a_paxlock_binary_is_refused_with_its_path() {
    let _scripts = one_script_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let failing = fake_paxlock(dir.path(), "error: unrecognized subcommand 'serve'", 2).unwrap();
    let err = NodeBinary::probe(&failing).unwrap_err();
    assert!(matches!(err, LaunchError::Binary { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&failing.display().to_string()),
        "{err}"
    );

    let missing = dir.path().join("no-such-paxlock");
    let err = NodeBinary::probe(&missing).unwrap_err();
    assert!(err.to_string().contains("no-such-paxlock"), "{err}");
}
