//! `paxlock dev`'s nodes never outlive it: stopped by SIGTERM or SIGHUP
//! (as systemd, Docker, CI timeouts and closing terminals stop it), or
//! killed outright, it takes its `paxlock serve` processes with it, and
//! their ports are free again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port_base, PAXLOCK};
use common::{TestResult, PATIENCE};
use rustix::process::Signal;

/// A `paxlock dev` cluster of three nodes, started and up.
struct Dev {
    child: Child,
    _dir: tempfile::TempDir,
    base_port: u16,
}

impl Dev {
    fn start() -> Result<Dev, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let base_port = free_port_base(3);
        let mut child = Command::new(PAXLOCK)
            .arg("dev")
            .arg("--dir")
            .arg(dir.path())
            .args(["--base-port", &base_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Read until the cluster is up, then keep draining on a thread so
        // that the nodes' output never blocks them.
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("cluster is up") {
                    let _ = up_tx.send(());
                }
            }
        });
        up_rx.recv_timeout(PATIENCE * 3)?;
        Ok(Dev {
            child,
            _dir: dir,
            base_port,
        })
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// (state, parent pid) of `pid`, if it exists.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` still runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Ends `dev` with `end`, then waits for every node it started to stop
/// and for node 1's port to be free.
fn nodes_stop_with_dev(end: impl FnOnce(&mut Dev)) -> TestResult {
    let mut dev = Dev::start()?;
    let nodes = children_of(dev.child.id());
    assert_eq!(nodes.len(), 3, "dev should run three nodes: {nodes:?}");
    end(&mut dev);
    let _ = dev.child.wait();
    let deadline = Instant::now() + PATIENCE;
    while nodes.iter().any(|&pid| running(pid)) {
        assert!(
            Instant::now() < deadline,
            "nodes still running {PATIENCE:?} after dev ended: {:?}",
            nodes
                .iter()
                .filter(|&&pid| running(pid))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port_free = std::net::UdpSocket::bind(("127.0.0.1", dev.base_port));
    assert!(
        port_free.is_ok(),
        "node 1's port is still taken: {port_free:?}"
    );
    Ok(())
}

#[test]
fn dev_nodes_stop_when_dev_gets_sigterm() -> TestResult {
    nodes_stop_with_dev(|dev| dev.signal(Signal::TERM))
}

#[test]
fn dev_nodes_stop_when_dev_gets_sighup() -> TestResult {
    nodes_stop_with_dev(|dev| dev.signal(Signal::HUP))
}

#[test]
fn dev_nodes_stop_when_dev_is_killed() -> TestResult {
    nodes_stop_with_dev(|dev| dev.signal(Signal::KILL))
}
