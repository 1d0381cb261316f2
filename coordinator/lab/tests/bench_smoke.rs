//! `paxlock-lab bench` runs end to end (briefly: it is a benchmark, not a test
//! of speed; this only proves it works and reports a result line).

mod common;

/// Runs `paxlock-lab bench` with `args` on a fresh folder and free ports;
/// returns its stdout and stderr, failing unless it exited 0.
fn bench(args: &[&str]) -> Result<(String, String), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Three nodes and the spare the `membership` workload uses.
    let base_port = paxlock_launcher::ports::free_udp_base(4).ok_or("no free UDP ports")?;
    let out = common::lab("bench")
        .arg("--dir")
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("stdout: {stdout}\nstderr: {stderr}").into());
    }
    Ok((stdout, stderr))
}

/// Figure `name` of `target`'s `workload` in the bench's `RESULT` lines
/// (`stderr` is shown when it is missing).
fn result_figure(
    stdout: &str,
    stderr: &str,
    target: &str,
    workload: &str,
    name: &str,
) -> Result<f64, Box<dyn std::error::Error>> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("RESULT target={target} workload={workload} ")))
        .ok_or_else(|| format!("no {target} {workload} result in: {stdout}\n{stderr}"))?;
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .ok_or_else(|| format!("no {name} in {line}"))?;
    Ok(value.parse()?)
}

#[test]
fn bench_runs_a_short_uncontended_workload_and_reports_a_result_line(
) -> Result<(), Box<dyn std::error::Error>> {
    let (stdout, _) = bench(&[
        "--workloads",
        "uncontended",
        "--clients",
        "2",
        "--duration",
        "2s",
        "--warmup",
        "0s",
    ])?;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT target=paxlock workload=uncontended clients=2"))
        .ok_or_else(|| format!("no result line in: {stdout}"))?;
    assert!(line.contains("errors=0"), "{line}");
    let cycles: f64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("cycles_per_s="))
        .ok_or("no cycles_per_s")?
        .parse()?;
    assert!(cycles > 0.0, "{line}");
    Ok(())
}

#[test]
fn bench_replaces_a_member_under_load_and_reports_each_step(
) -> Result<(), Box<dyn std::error::Error>> {
    let (stdout, stderr) = bench(&[
        "--workloads",
        "membership",
        "--state-mib",
        "1",
        "--failover-clients",
        "2",
        "--warmup",
        "0s",
    ])?;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT target=paxlock workload=membership clients=2"))
        .ok_or_else(|| format!("no result line in: {stdout}\nstderr: {stderr}"))?;
    for step in ["add_ms", "promote_ms", "remove_ms"] {
        let took: f64 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{step}=")))
            .ok_or_else(|| format!("no {step} in {line}"))?
            .parse()?;
        assert!(took > 0.0, "{line}");
    }
    assert!(stderr.contains("replaced member"), "{stderr}");
    Ok(())
}

/// `--compare` runs every lock primitive and the election on each peer
/// installed here (etcd-server, zookeeper: not on CI machines, where each
/// peer's "skipped" line is what is checked) beside Paxlock, and prints
/// the table with a ratio column per peer.
#[test]
fn compare_runs_the_workloads_on_every_installed_peer() -> Result<(), Box<dyn std::error::Error>> {
    let etcd_base = paxlock_launcher::ports::free_udp_base(13).ok_or("no free ports")?;
    let zookeeper_base = paxlock_launcher::ports::free_udp_base(23).ok_or("no free ports")?;
    let (stdout, stderr) = bench(&[
        "--compare",
        "--workloads",
        "uncontended,semaphore,rwlock,election",
        "--clients",
        "2",
        "--watchers",
        "2",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--etcd-base-port",
        &etcd_base.to_string(),
        "--zookeeper-base-port",
        &zookeeper_base.to_string(),
    ])?;
    let result = |target: &str, workload: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("RESULT target={target} workload={workload} ")))
            .map(str::to_string)
    };
    let head = stdout
        .lines()
        .find(|l| l.starts_with("run ") && l.contains("figure"))
        .ok_or_else(|| format!("no table in: {stdout}"))?;
    for (peer, column, workloads) in [
        (
            "etcd",
            "pax/etcd",
            &["uncontended", "rwlock", "election"][..],
        ),
        (
            "zookeeper",
            "pax/zk",
            &["uncontended", "semaphore", "rwlock", "election"][..],
        ),
    ] {
        assert!(head.contains(column), "{head}");
        if stdout.contains(&format!("{peer}: skipped: no ")) {
            eprintln!("{peer} is not installed here: only its skip was checked");
            continue;
        }
        for workload in workloads {
            let line = result(peer, workload)
                .ok_or_else(|| format!("no {peer} {workload} result in: {stdout}\n{stderr}"))?;
            assert!(line.contains("errors=0.000"), "{line}");
        }
    }
    if !stdout.contains("etcd: skipped: no ") {
        assert!(
            stdout.contains("etcd semaphore: skipped: it has no semaphore"),
            "{stdout}"
        );
    }
    for workload in ["uncontended", "semaphore", "rwlock", "election"] {
        result("paxlock", workload).ok_or_else(|| format!("no paxlock {workload} in {stdout}"))?;
    }
    Ok(())
}

/// The scale workloads run end to end on a small scale and draw their
/// charts: sessions kept alive, watchers told of every new leader, state
/// held with its snapshot measured, a short soak.
#[test]
fn scale_workloads_report_their_figures_and_draw_their_charts(
) -> Result<(), Box<dyn std::error::Error>> {
    let charts = tempfile::tempdir()?;
    let plot = charts.path().join("bench.svg");
    let plot_arg = plot.display().to_string();
    let (stdout, stderr) = bench(&[
        "--workloads",
        "sessions,watchers,state,soak",
        "--session-counts",
        "300",
        "--session-connections",
        "4",
        "--watcher-counts",
        "120",
        "--state-locks",
        "400",
        "--state-elections",
        "20",
        "--soak-duration",
        "4s",
        "--soak-interval",
        "1s",
        "--duration",
        "3s",
        "--warmup",
        "1s",
        "--plot",
        &plot_arg,
    ])?;
    let figure =
        |workload: &str, name: &str| result_figure(&stdout, &stderr, "paxlock", workload, name);
    // Every session was kept alive: keepalives went out at TTL/3 each
    // (10 s TTL: 300 sessions make about 90 a second) and none failed.
    assert_eq!(figure("sessions", "sessions")?, 300.0);
    assert!(figure("sessions", "keepalives_per_s")? > 40.0, "{stdout}");
    assert_eq!(figure("sessions", "errors")?, 0.0, "{stdout}");
    assert!(figure("sessions", "leader_rss_mib")? > 0.0, "{stdout}");
    // Every resign was seen by all 120 watchers.
    assert!(figure("watchers", "handoffs_per_s")? > 0.0, "{stdout}");
    assert_eq!(figure("watchers", "incomplete")?, 0.0, "{stdout}");
    // The state was held, and a snapshot covering it read and written.
    assert_eq!(figure("state", "locks")?, 400.0);
    assert!(figure("state", "snapshot_mib")? > 0.0, "{stdout}");
    assert!(figure("state", "snapshot_restore_ms")? > 0.0, "{stdout}");
    assert!(figure("state", "follower_restart_s")? > 0.0, "{stdout}");
    // The soak reported each interval.
    assert!(figure("soak", "acquires_per_s")? > 0.0, "{stdout}");
    assert!(stderr.contains("[paxlock soak]"), "{stderr}");
    for chart in [
        "bench.svg",
        "bench-sessions.svg",
        "bench-state.svg",
        "bench-soak.svg",
    ] {
        let svg = std::fs::read_to_string(charts.path().join(chart))
            .map_err(|e| format!("{chart}: {e}"))?;
        assert!(svg.contains("<svg") && svg.contains("paxlock"), "{chart}");
    }
    Ok(())
}

/// The scale workloads that etcd has a counterpart for run on it too when
/// it is installed (on CI machines it is not, and the bench says it
/// skipped it):
/// leases kept alive on one stream per connection, and watchers sharing a
/// connection's Watch stream, each told of every new leader.
#[test]
fn etcd_keeps_its_leases_and_tells_shared_watchers_of_every_leader(
) -> Result<(), Box<dyn std::error::Error>> {
    let etcd_base = paxlock_launcher::ports::free_udp_base(13).ok_or("no free ports")?;
    let (stdout, stderr) = bench(&[
        "--compare",
        "--peers",
        "etcd",
        "--workloads",
        "sessions,watchers",
        "--session-counts",
        "200",
        "--session-connections",
        "4",
        "--watcher-counts",
        "120",
        "--duration",
        "4s",
        "--warmup",
        "1s",
        "--etcd-base-port",
        &etcd_base.to_string(),
    ])?;
    if stdout.contains("etcd: skipped: no ") {
        eprintln!("etcd is not installed here: only its skip was checked");
        return Ok(());
    }
    let figure =
        |workload: &str, name: &str| result_figure(&stdout, &stderr, "etcd", workload, name);
    assert_eq!(figure("sessions", "sessions")?, 200.0);
    assert!(figure("sessions", "keepalives_per_s")? > 20.0, "{stdout}");
    assert_eq!(figure("sessions", "errors")?, 0.0, "{stdout}");
    // 120 watchers, 50 to a connection: three shared Watch streams.
    assert!(figure("watchers", "handoffs_per_s")? > 0.0, "{stdout}");
    assert_eq!(figure("watchers", "incomplete")?, 0.0, "{stdout}");
    Ok(())
}
