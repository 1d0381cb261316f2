//! The bounded CI version of `paxlock-lab chaos`: real node processes under
//! seeded network and process faults, on loopback behind the fault proxies
//! and, as root, with each node in its own network namespace. Each run must
//! end with every check passed; on failure the output (with the seed to
//! replay) is printed.

mod common;

use paxlock_launcher::ports::free_udp_base;
use paxlock_launcher::requires::{machine_has, Need};

/// One chaos run at a time: each is a whole cluster plus 8 workers.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `paxlock-lab chaos` with `args`; returns its stdout if it passed.
fn chaos(args: &[&str]) -> Result<String, String> {
    let _serial = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let output = common::lab("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path().join("run"))
        .output()
        .map_err(|e| format!("cannot run paxlock-lab chaos: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "paxlock-lab chaos {args:?} failed ({}):\n{stdout}\n--- stderr (tail) ---\n{}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 40)
        ));
    }
    Ok(stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The summary must name the checks it ran, all passed.
fn assert_all_checks_passed(stdout: &str) {
    let passed = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("PASS"))
        .count();
    assert!(
        passed >= 10 && stdout.contains("result: all") && !stdout.contains("FAIL"),
        "{stdout}"
    );
}

#[test]
fn chaos_on_loopback_with_fault_proxies_passes_every_check() {
    // Three nodes and four spares on base..base+6, their proxies on
    // base+100..base+106.
    let base = free_udp_base(107)
        .expect("no free loopback UDP ports")
        .to_string();
    // Seed 121 replaces a follower, grows 3 members to 5, replaces another
    // and shrinks back to 3 within the first 30 s, and has injected every
    // kind of fault by 50 s (60 s keeps CI's budget).
    let stdout = chaos(&[
        "--seed",
        "121",
        "--duration",
        "60s",
        "--workers",
        "8",
        "--base-port",
        &base,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_all_checks_passed(&stdout);
    // The schedule really injected faults of several kinds.
    for kind in [
        "SIGKILL",
        "SIGSTOP",
        "links:",
        "partition",
        "isolate",
        "admin: force-release",
        "admin: revoke",
        "membership: replace",
        "membership: grow or shrink",
    ] {
        assert!(stdout.contains(kind), "no {kind} fault in:\n{stdout}");
    }
    for change in [
        "replaced node",
        "grew 3 -> 5 members",
        "shrank 5 -> 3 members",
    ] {
        assert!(stdout.contains(change), "no \"{change}\" in:\n{stdout}");
    }
}

#[test]
fn chaos_with_a_network_namespace_per_node_passes_every_check() {
    let needs = [Need::Root, Need::Tool("ip"), Need::Tool("iptables")];
    if !machine_has("chaos_with_a_network_namespace_per_node", &needs) {
        return;
    }
    let stdout = chaos(&[
        "--netns",
        "--seed",
        "12",
        "--duration",
        "40s",
        "--workers",
        "8",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_all_checks_passed(&stdout);
    assert!(
        stdout.contains("one network namespace per node"),
        "{stdout}"
    );
}
