//! `paxlock` as a real process: the dev cluster comes up over mutual TLS,
//! and bad certificate, key and config files give a clear error naming the
//! file, never a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TestResult;

fn paxlock(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_paxlock"))
        .args(args)
        .output()
}

/// A free UDP port base with room for `n` nodes (bind, read, release).
fn free_port_base(n: u16) -> u16 {
    for _ in 0..50 {
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = sock.local_addr() else {
            continue;
        };
        let base = addr.port();
        drop(sock);
        if base < 60000
            && (1..n).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
    17101
}

#[test]
fn dev_cluster_connects_all_nodes_over_mutual_tls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let base = free_port_base(3).to_string();
    let dir_arg = dir.path().to_string_lossy().to_string();
    let out = paxlock(&[
        "dev",
        "--dir",
        &dir_arg,
        "--base-port",
        &base,
        "--exit-when-connected",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in 1..=3 {
        assert!(
            stdout.contains(&format!(
                "node {id}: connected to all peers over mutual TLS"
            )),
            "{stdout}"
        );
    }
    assert!(stdout.contains("cluster is up"), "{stdout}");
    Ok(())
}

#[test]
fn certs_init_writes_keys_readable_only_by_the_owner() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("pki");
    let out = paxlock(&[
        "certs",
        "init",
        "--nodes",
        "3",
        "--out",
        &out_dir.to_string_lossy(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_dir = out_dir.with_file_name(format!(
        "{}-ca",
        out_dir.file_name().ok_or("no name")?.to_string_lossy()
    ));
    assert!(
        !out_dir.join("ca.key").exists(),
        "the CA key was written beside the node keys"
    );
    let ca_mode = std::fs::metadata(&ca_dir)?.permissions().mode() & 0o777;
    assert_eq!(ca_mode, 0o700, "the CA folder");
    let ca_key_mode = std::fs::metadata(ca_dir.join("ca.key"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(ca_key_mode, 0o600, "ca.key");
    for name in [
        "node-1.key",
        "node-2.key",
        "node-3.key",
        "client-dev-client.key",
    ] {
        let mode = std::fs::metadata(out_dir.join(name))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    for name in [
        "ca.pem",
        "node-1.pem",
        "node-2.pem",
        "node-3.pem",
        "client-dev-client.pem",
    ] {
        assert!(out_dir.join(name).exists(), "{name}");
    }
    Ok(())
}

/// Writes a PKI and a single-node config into `dir`; returns the config path.
fn write_single_node(dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    paxlock_certs::write_dev_pki(&dir.join("certs"), &dir.join("ca"), "t", 2, &[], &[])?;
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        "node_id = 1\ncluster_id = \"t\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-1.pem\"\nkey = \"certs/node-1.key\"\n",
    )?;
    Ok(config)
}

/// Runs `paxlock serve` and expects a clean failure whose message contains
/// every one of `needles`.
fn expect_clean_failure(config: &Path, needles: &[&str]) -> TestResult {
    let out = paxlock(&["serve", "--config", &config.to_string_lossy()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
    Ok(())
}

#[test]
fn missing_certificate_file_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    std::fs::remove_file(dir.path().join("certs/node-1.pem"))?;
    expect_clean_failure(&config, &["node-1.pem", "cannot read"])
}

#[test]
fn unreadable_key_file_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    std::fs::write(dir.path().join("certs/node-1.key"), "not a key")?;
    expect_clean_failure(&config, &["node-1.key", "no PEM private key"])
}

#[test]
fn key_that_does_not_match_the_certificate_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    std::fs::copy(
        dir.path().join("certs/node-2.key"),
        dir.path().join("certs/node-1.key"),
    )?;
    expect_clean_failure(&config, &["node-1.key", "does not match", "node-1.pem"])
}

#[test]
fn ca_file_that_is_not_a_certificate_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    std::fs::copy(
        dir.path().join("certs/node-1.key"),
        dir.path().join("certs/ca.pem"),
    )?;
    expect_clean_failure(&config, &["ca.pem", "no PEM certificate"])
}

#[test]
fn invalid_config_value_names_the_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    let text = std::fs::read_to_string(&config)?.replace("node_id = 1", "node_id = 0");
    std::fs::write(&config, text)?;
    expect_clean_failure(&config, &["node.toml", "node_id"])
}

/// Writes a few acceptor records into `data` as node 1 of cluster "t".
fn write_acceptor_records(data: &Path) -> TestResult {
    use paxlock_coordinator::node::driver::Durability;
    use paxlock_coordinator::paxos::{Ballot, NodeId, PersistOp, PersistRequest, PersistSeq, Slot};
    use paxlock_storage::FileDurability;
    let (mut store, _) = FileDurability::open(data, "t", 1)?;
    let ballot = Ballot {
        round: 1,
        node: NodeId(1),
    };
    for slot in 0..4 {
        store.persist(&[PersistRequest {
            seq: PersistSeq(slot + 1),
            ops: vec![PersistOp::Accept {
                slot: Slot(slot),
                ballot,
                batch: vec![vec![0xab; 64].into()],
            }],
        }])?;
    }
    Ok(())
}

fn snapshot_dir(dir: &Path) -> Result<Vec<(std::path::PathBuf, Vec<u8>)>, std::io::Error> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(&p).map(|b| (p, b)))
        .collect()
}

#[test]
fn a_corrupt_wal_is_refused_naming_file_and_offset_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    let data = dir.path().join("data");
    write_acceptor_records(&data)?;
    let segment = std::fs::read_dir(&data)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("wal-"))
        })
        .ok_or("no segment written")?;
    // Flip a payload byte of the first record: damage followed by intact
    // records is corruption, not a torn write.
    let mut bytes = std::fs::read(&segment)?;
    let at = 32 + 24 + 10;
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes)?;
    let before = snapshot_dir(&data)?;
    expect_clean_failure(&config, &["data corruption", "wal-", "offset"])?;
    assert_eq!(
        snapshot_dir(&data)?,
        before,
        "the data directory must be left untouched"
    );
    Ok(())
}

#[test]
fn a_data_directory_of_another_node_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = write_single_node(dir.path())?;
    write_acceptor_records(&dir.path().join("data"))?;
    // Same directory, but this config says node 2 (with node 2's certificate).
    let text = std::fs::read_to_string(&config)?
        .replace("node_id = 1", "node_id = 2")
        .replace("node-1.", "node-2.");
    std::fs::write(&config, text)?;
    expect_clean_failure(&config, &["was created for", "node 1", "runs as", "node 2"])
}

#[test]
fn issuing_a_client_certificate_names_the_ca_files_explicitly() -> TestResult {
    let out = paxlock(&["certs", "issue-client", "app"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ca-cert") && stderr.contains("--ca-key"),
        "{stderr}"
    );
    // A name a node would carry is no client's.
    let dir = tempfile::tempdir()?;
    let init = paxlock(&[
        "certs",
        "init",
        "--nodes",
        "1",
        "--out",
        &dir.path().join("pki").to_string_lossy(),
    ])?;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let ca = dir.path().join("pki-ca");
    let reserved = paxlock(&[
        "certs",
        "issue-client",
        "node-1.paxlock",
        "--ca-cert",
        &ca.join("ca.pem").to_string_lossy(),
        "--ca-key",
        &ca.join("ca.key").to_string_lossy(),
        "--out",
        &dir.path().join("pki").to_string_lossy(),
    ])?;
    assert!(!reserved.status.success());
    let stderr = String::from_utf8_lossy(&reserved.stderr);
    assert!(stderr.contains(".paxlock"), "{stderr}");
    Ok(())
}
