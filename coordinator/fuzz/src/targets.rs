//! Every decoder a node runs on bytes from outside, with valid encodings
//! to start from. Each `run` decodes, and carries a decoded value as far as
//! the node would (a peer message through the codec, a proposal to its
//! command, a snapshot file to the machine it restores), so a value that
//! decodes but breaks what uses it is found too.

use std::path::Path;

use bytes::Bytes;
use paxlock::proto::{self, request::Op};
use paxlock_core::access::{AccessRule, AccessRules, Permission, QuotaRule};
use paxlock_core::locks::harness::Harness;
use paxlock_core::locks::{
    ClientOp, Command, CommandKind, Identity, StateMachine, CURRENT_PROTOCOL,
};
use paxlock_core::paxos::{self, Ballot, NodeId, PersistOp, ReportedEntry, Slot, SnapshotChunk};
use paxlock_core::proposal::Proposal;
use paxlock_storage::record::{decode_frame, encode_frame, Lsn, RecordRef};
use paxlock_storage::snapshot::{decode_snapshot, encode_snapshot, SnapshotData};
use paxlock_storage::{durable_log, meta};
use prost::Message as _;

use crate::Target;

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "client-request",
            seeds: client_requests,
            run: client_request,
        },
        Target {
            name: "peer-message",
            seeds: peer_messages,
            run: peer_message,
        },
        Target {
            name: "proposal",
            seeds: proposals,
            run: proposal,
        },
        Target {
            name: "command",
            seeds: commands,
            run: command,
        },
        Target {
            name: "wal-frame",
            seeds: wal_frames,
            run: wal_frame,
        },
        Target {
            name: "acceptor-record",
            seeds: acceptor_records,
            run: acceptor_record,
        },
        Target {
            name: "acceptor-state",
            seeds: acceptor_states,
            run: acceptor_state,
        },
        Target {
            name: "snapshot-file",
            seeds: snapshot_files,
            run: snapshot_file,
        },
        Target {
            name: "machine-snapshot",
            seeds: machine_snapshots,
            run: machine_snapshot,
        },
        Target {
            name: "identity-file",
            seeds: identity_files,
            run: identity_file,
        },
    ]
}

/// The label of a result: the value's kind, or the error's first words
/// with numbers left out (an outcome is a kind of answer, not its figures).
fn label<T, E: std::fmt::Display>(result: &Result<T, E>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => format!("ok:{}", ok(value)),
        Err(e) => {
            let text: String = e
                .to_string()
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            let words: Vec<&str> = text.split_whitespace().take(4).collect();
            format!("err:{}", words.join(" "))
        }
    }
}

fn kind_of<T: std::fmt::Debug>(value: &T) -> String {
    let text = format!("{value:?}");
    text.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

// ----- client requests ------------------------------------------------

fn request(op: Op) -> Vec<u8> {
    proto::Request {
        request_id: 7,
        session_id: 3,
        ack_below: 5,
        waiting: vec![4],
        op: Some(op),
    }
    .encode_to_vec()
}

fn client_requests() -> Vec<Vec<u8>> {
    vec![
        request(Op::Hello(proto::Hello {
            client_name: "fuzz".into(),
        })),
        request(Op::OpenSession(proto::OpenSession {
            ttl_ms: 10_000,
            open_key: 9,
        })),
        request(Op::Acquire(proto::Acquire {
            name: "l".into(),
            wait: true,
            timeout_ms: 5,
            ..Default::default()
        })),
        request(Op::AcquireWithValue(proto::Acquire {
            name: "l".into(),
            wait: true,
            timeout_ms: 5,
            value: b"host-1".to_vec(),
            ..Default::default()
        })),
        request(Op::AcquireShared(proto::Acquire {
            name: "pool".into(),
            wait: true,
            timeout_ms: 5,
            mode: proto::acquire::Mode::Permit.into(),
            permits: 3,
            ..Default::default()
        })),
        request(Op::AcquireShared(proto::Acquire {
            name: "table".into(),
            mode: proto::acquire::Mode::Read.into(),
            ..Default::default()
        })),
        request(Op::ForceRelease(proto::ForceRelease {
            name: "l".into(),
            token: 0,
        })),
        request(Op::ForceRelease(proto::ForceRelease {
            name: "l".into(),
            token: 42,
        })),
        request(Op::WatchLock(proto::WatchLock {
            name: "l".into(),
            after_index: 17,
        })),
        request(Op::Campaign(proto::Campaign {
            election: "e".into(),
            value: b"value".to_vec(),
            timeout_ms: 0,
        })),
        request(Op::Watch(proto::Watch {
            election: "e".into(),
            after_index: 3,
            from_start: true,
        })),
        request(Op::SetAccessRules(proto::SetAccessRules {
            rules: vec![proto::AccessRule {
                identities: vec!["a*".into()],
                permissions: vec![
                    proto::Permission::Lock.into(),
                    proto::Permission::Admin.into(),
                ],
                prefixes: vec!["p/".into()],
            }],
            expected_version: Some(4),
            quotas: vec![proto::QuotaRule {
                identities: vec!["b".into()],
                sessions: Some(3),
                locks: None,
                elections: Some(1),
                value_bytes: Some(1 << 20),
            }],
        })),
        request(Op::DescribeLock(proto::DescribeLock { name: "l".into() })),
        request(Op::CheckToken(proto::CheckToken {
            name: "l".into(),
            token: 42,
        })),
        request(Op::ListLocks(proto::ListLocks {
            prefix: "p/".into(),
            after: "p/a".into(),
            limit: 10,
        })),
        request(Op::ListSessions(proto::ListSessions { after: 3, limit: 0 })),
    ]
}

fn client_request(input: &[u8]) -> String {
    let decoded = proto::Request::decode(input);
    label(&decoded, |r| kind_of(&r.op))
}

// ----- peer messages --------------------------------------------------

fn b(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn v(bytes: &[u8]) -> paxos::Value {
    paxos::Value::copy_from_slice(bytes)
}

fn peer_messages() -> Vec<Vec<u8>> {
    use paxos::Message as M;
    let messages = [
        M::PreVote { ballot: b(1, 2) },
        M::Prepare {
            ballot: b(3, 1),
            from_slot: Slot(9),
        },
        M::Promise {
            ballot: b(3, 1),
            from_slot: Slot(9),
            chosen_up_to: Slot(8),
            entries: vec![ReportedEntry {
                slot: Slot(9),
                ballot: b(2, 2),
                batch: vec![v(&[7]), v(&[])],
                chosen: false,
            }],
            part_start: Slot(9),
            part_end: Some(Slot(12)),
        },
        M::Accept {
            ballot: b(3, 1),
            slot: Slot(10),
            batch: vec![v(&[1, 2, 3])],
            commit: Slot(9),
        },
        M::CatchUp {
            entries: vec![(Slot(3), vec![v(b"x")])],
            snapshot: Some(SnapshotChunk {
                up_to: Slot(2),
                total_bytes: 10,
                offset: 2,
                data: Bytes::from_static(&[1, 2]),
            }),
        },
        M::SnapshotRequest {
            up_to: Slot(40),
            offset: 1 << 20,
        },
        M::Nack {
            ballot: b(1, 1),
            promised: b(2, 3),
        },
    ];
    messages
        .iter()
        .map(|m| paxlock_peer_codec::encode(m).encode_to_vec())
        .collect()
}

fn peer_message(input: &[u8]) -> String {
    match paxlock_peer_codec::proto::PeerMessage::decode(input) {
        Err(e) => format!("err:protobuf {e}").chars().take(40).collect(),
        Ok(pb) => label(&paxlock_peer_codec::decode(pb), kind_of),
    }
}

// ----- the log: proposals and commands --------------------------------

fn sample_commands() -> Vec<Command> {
    let kinds = vec![
        CommandKind::OpenSessionAs {
            ttl_ms: 10_000,
            owner: Identity("o".into()),
            open_key: 3,
        },
        CommandKind::ClientAs {
            caller: Identity("o".into()),
            session: paxlock_core::locks::SessionId(4),
            request_id: paxlock_core::locks::RequestId(2),
            ack_below: paxlock_core::locks::RequestId(1),
            waiting: vec![paxlock_core::locks::RequestId(1)],
            op: ClientOp::Campaign {
                name: "e".into(),
                value: b"v".to_vec(),
            },
        },
        CommandKind::ClientAs {
            caller: Identity("o".into()),
            session: paxlock_core::locks::SessionId(4),
            request_id: paxlock_core::locks::RequestId(3),
            ack_below: paxlock_core::locks::RequestId(3),
            waiting: Vec::new(),
            op: ClientOp::AcquireShared {
                name: "pool".into(),
                wait: true,
                mode: paxlock_core::locks::shared::Mode::Permit,
                permits: 4,
            },
        },
        CommandKind::Takeover { epoch: 5 },
        CommandKind::RaiseProtocol {
            version: CURRENT_PROTOCOL,
        },
        CommandKind::SetAccessRules {
            by: Identity("ops".into()),
            rules: sample_rules(),
            expected_version: Some(3),
        },
    ];
    kinds
        .into_iter()
        .map(|kind| Command { at_ms: 1_000, kind })
        .collect()
}

fn sample_rules() -> AccessRules {
    AccessRules {
        rules: vec![AccessRule {
            identities: vec!["a".into(), "b*".into()],
            permissions: [Permission::Lock, Permission::Read].into_iter().collect(),
            prefixes: vec!["x/".into()],
        }],
        quotas: vec![QuotaRule {
            identities: vec!["*".into()],
            sessions: Some(2),
            locks: None,
            elections: Some(1),
            value_bytes: None,
        }],
    }
}

fn proposals() -> Vec<Vec<u8>> {
    sample_commands()
        .iter()
        .filter_map(|c| Proposal::encode(1, 9, c).ok())
        .collect()
}

fn proposal(input: &[u8]) -> String {
    label(&Proposal::decode(input), |p| kind_of(&p.command.kind))
}

fn commands() -> Vec<Vec<u8>> {
    sample_commands()
        .iter()
        .filter_map(|c| c.encode().ok())
        .collect()
}

/// A command that decodes is applied to a machine, as a replica would.
fn command(input: &[u8]) -> String {
    let decoded = Command::decode(input);
    if let Ok(command) = &decoded {
        let mut machine = StateMachine::new(Default::default());
        let _ = machine.apply(1, command.clone());
        let _ = machine.check_invariants();
    }
    label(&decoded, |c| kind_of(&c.kind))
}

// ----- storage ----------------------------------------------------------

const SALT: u64 = 0x5a17;

fn sample_ops() -> Vec<PersistOp> {
    vec![
        PersistOp::Promise(b(4, 2)),
        PersistOp::Accept {
            slot: Slot(7),
            ballot: b(4, 2),
            batch: vec![v(b"abc"), v(&[])],
        },
        PersistOp::Chosen {
            slot: Slot(7),
            batch: vec![v(b"abc")],
        },
    ]
}

fn wal_frames() -> Vec<Vec<u8>> {
    sample_ops()
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let (kind, payload) = durable_log::encode_op(op);
            let mut out = Vec::new();
            let lsn = Lsn(10 + i as u64);
            encode_frame(
                &mut out,
                SALT,
                lsn,
                Lsn(10),
                RecordRef {
                    kind,
                    payload: &payload,
                },
            );
            out
        })
        .collect()
}

/// A frame, then the acceptor record in it, as recovery reads them.
fn wal_frame(input: &[u8]) -> String {
    match decode_frame(input, 0, SALT, crate::MAX_INPUT_BYTES) {
        Err(e) => label(&Err::<(), _>(e), |_| String::new()),
        Ok((record, _)) => label(
            &durable_log::decode_op(record.kind, &record.payload),
            kind_of,
        ),
    }
}

/// An acceptor record as the WAL frame carries it: the kind byte, then
/// the payload (the frame's checksum keeps mutations of a whole frame from
/// reaching this decoder, so it is fuzzed on its own).
fn acceptor_records() -> Vec<Vec<u8>> {
    sample_ops()
        .iter()
        .map(|op| {
            let (kind, payload) = durable_log::encode_op(op);
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&payload);
            bytes
        })
        .collect()
}

fn acceptor_record(input: &[u8]) -> String {
    let Some((&kind, payload)) = input.split_first() else {
        return "empty".into();
    };
    label(&durable_log::decode_op(kind, payload), kind_of)
}

fn acceptor_states() -> Vec<Vec<u8>> {
    let mut state = paxos::DurableState::default();
    for (seq, op) in sample_ops().into_iter().enumerate() {
        state.apply(&paxos::PersistRequest {
            seq: paxos::PersistSeq(seq as u64 + 1),
            ops: vec![op],
        });
    }
    vec![
        durable_log::encode_state(&state),
        durable_log::encode_state(&Default::default()),
    ]
}

fn acceptor_state(input: &[u8]) -> String {
    label(&durable_log::decode_state(input), |s| {
        format!("{}", s.log.len())
    })
}

fn machines() -> Vec<StateMachine> {
    let mut before = Harness::small();
    let a = before.open();
    before.token(a, "l");
    before.campaign(a, "e", b"v");
    let mut after = Harness::small();
    after.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    after.apply(CommandKind::SetAccessRules {
        by: Identity("ops".into()),
        rules: sample_rules(),
        expected_version: None,
    });
    let s = after.open();
    after.token(s, "l");
    after.campaign(s, "e", b"v");
    vec![before.sm, after.sm]
}

fn machine_snapshots() -> Vec<Vec<u8>> {
    machines()
        .iter()
        .filter_map(|m| m.snapshot().ok())
        .collect()
}

fn machine_snapshot(input: &[u8]) -> String {
    label(&StateMachine::restore(input), |m| {
        format!("rev{}", m.revision() > 0)
    })
}

fn snapshot_files() -> Vec<Vec<u8>> {
    machine_snapshots()
        .into_iter()
        .map(|state| {
            encode_snapshot(&SnapshotData {
                covered_lsn: Lsn(12),
                covered_slot: 9,
                state,
            })
        })
        .collect()
}

/// A snapshot file, then the machine in it, as a node restores one.
fn snapshot_file(input: &[u8]) -> String {
    match decode_snapshot(input, Path::new("fuzz.snap")) {
        Err(e) => label(&Err::<(), _>(e), |_| String::new()),
        Ok(data) => label(&StateMachine::restore(&data.state), |_| "machine".into()),
    }
}

fn identity_files() -> Vec<Vec<u8>> {
    vec![meta::Identity {
        cluster_id: 77,
        node_id: 2,
    }
    .encode()]
}

fn identity_file(input: &[u8]) -> String {
    label(&meta::Identity::decode(input, Path::new("identity")), |i| {
        i.node_id.to_string()
    })
}
