//! Real-process crash test: this test binary re-executes itself as a child
//! that appends and waits for durability in a loop, printing every
//! acknowledged LSN; the parent SIGKILLs it at a random moment and checks that
//! every acknowledged record is on disk after recovery. Repeated many times
//! on the same directory, so recovery after a kill is itself exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test failure should stop loudly

mod storage_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paxlock_storage::{FileStore, FileStoreOptions, Storage};

const CHILD_DIR_ENV: &str = "PAXLOCK_STORAGE_KILL9_CHILD_DIR";
const ROUNDS: usize = 20;
const CHILD_PRODUCERS: usize = 4;

fn options() -> FileStoreOptions {
    // Small segments so kills also land during segment rolls.
    FileStoreOptions {
        segment_size_limit_bytes: 16 * 1024,
        ..FileStoreOptions::default()
    }
}

/// The child's body. Does nothing unless started by the parent test.
#[test]
fn kill9_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = match FileStore::open(&dir.into(), storage_common::ID, options()) {
        Ok((store, _)) => Arc::new(store),
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(2);
        }
    };
    let pid = std::process::id();
    let started = Instant::now();
    let producers: Vec<_> = (0..CHILD_PRODUCERS)
        .map(|producer| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                // Bounded even if the parent never kills us.
                for i in 0..1_000_000u64 {
                    if started.elapsed() > Duration::from_secs(30) {
                        return;
                    }
                    let payload = format!("{pid}-{producer}-{i}");
                    let lsn = match store.append(1, payload.as_bytes()).and_then(|t| t.wait()) {
                        Ok(lsn) => lsn,
                        Err(e) => {
                            eprintln!("child: append failed: {e}");
                            std::process::exit(3);
                        }
                    };
                    let mut out = std::io::stdout().lock();
                    // Printed only after wait() returned: a line means "acknowledged".
                    let _ = writeln!(out, "ACK {lsn} {payload}");
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for p in producers {
        let _ = p.join();
    }
}

fn next_random(state: &mut u64) -> u64 {
    // xorshift64: enough to spread kill times; the seed is printed on failure.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut rounds_done = 0;
    let mut torn_tails_seen = 0;

    for round in 0..ROUNDS {
        if Instant::now() > deadline {
            break;
        }
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill9_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (first_ack_tx, first_ack_rx) = mpsc::sync_channel(1);
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                // A line cut by the kill is an error or partial: skip it.
                let Ok(line) = line else { break };
                if line.starts_with("ACK ") {
                    if lines.is_empty() {
                        let _ = first_ack_tx.try_send(());
                    }
                    lines.push(line);
                }
            }
            lines
        });
        // Kill while acknowledgements are flowing: after the first, plus a
        // random 0-40 ms.
        first_ack_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("child acknowledged nothing");
        std::thread::sleep(Duration::from_micros(next_random(&mut rng) % 40_000));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let lines = reader.join().expect("reader");

        let mut new_acks = 0;
        for line in lines {
            let mut parts = line.splitn(3, ' ');
            let (Some(_), Some(lsn), Some(payload)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(lsn) = lsn.parse::<u64>() else {
                continue;
            };
            if let Some(previous) = acked.insert(lsn, payload.to_string()) {
                panic!("seed {seed}: LSN {lsn} acknowledged twice ({previous} and {payload})");
            }
            new_acks += 1;
        }

        let (store, recovered) =
            FileStore::open(&tmp.path().to_path_buf(), storage_common::ID, options())
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: recovery failed: {e}"));
        drop(store);
        torn_tails_seen += usize::from(recovered.torn_tail.is_some());
        let on_disk: BTreeMap<u64, Vec<u8>> = recovered
            .records
            .into_iter()
            .map(|r| (r.lsn.0, r.payload))
            .collect();
        for (lsn, payload) in &acked {
            assert_eq!(
                on_disk.get(lsn).map(Vec::as_slice),
                Some(payload.as_bytes()),
                "seed {seed} round {round}: acknowledged LSN {lsn} lost"
            );
        }
        assert!(
            new_acks > 0,
            "seed {seed} round {round}: no acknowledgement parsed"
        );
        rounds_done += 1;
    }
    assert!(
        rounds_done >= 5,
        "only {rounds_done} kill rounds fit in the time budget"
    );
    eprintln!(
        "kill -9 rounds: {rounds_done}, acknowledged records checked: {}, torn tails repaired: {torn_tails_seen}",
        acked.len()
    );
}
