//! `paxlock-lab bench` runs end to end (briefly: it is a benchmark, not a test
//! of speed; this only proves it works and reports a result line).

mod common;

#[test]
fn bench_runs_a_short_uncontended_workload_and_reports_a_result_line(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let base_port = paxlock_launcher::ports::free_udp_base(3).ok_or("no free UDP ports")?;
    let out = common::lab("bench")
        .arg("--dir")
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .args([
            "--workloads",
            "uncontended",
            "--clients",
            "2",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
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
