//! Every request acts only as its caller: a session belongs to the identity
//! (client certificate name) that opened it, and a client with another
//! certificate from the same CA can neither act for it nor read its
//! recorded answers. Real `paxlock serve` processes, two identities (the
//! second issued with `paxlock certs issue-client`), raw wire requests.

mod common;

use common::cluster::ProcessCluster;
use common::{RawClient, TestResult};
use paxlock::proto::{self, request::Op, response, ErrorCode, Response};

const TTL_MS: u64 = 30_000;

/// The error code of `response`, or `None` if it succeeded.
fn code(response: &Response) -> Option<ErrorCode> {
    response
        .error
        .as_ref()
        .map(|e| ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified))
}

async fn open_session(client: &RawClient) -> Result<u64, Box<dyn std::error::Error>> {
    open_keyed(client, 0).await
}

async fn open_keyed(client: &RawClient, open_key: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let open = Op::OpenSession(proto::OpenSession {
        ttl_ms: TTL_MS,
        open_key,
    });
    match client.ask_op(0, 0, open).await?.result {
        Some(response::Result::SessionOpened(s)) => Ok(s.session_id),
        other => Err(format!("no session: {other:?}").into()),
    }
}

async fn hello_identity(client: &RawClient) -> Result<String, Box<dyn std::error::Error>> {
    let hello = Op::Hello(proto::Hello::default());
    match client.ask_op(0, 0, hello).await?.result {
        Some(response::Result::Hello(h)) => Ok(h.identity),
        other => Err(format!("no hello: {other:?}").into()),
    }
}

#[test]
fn a_session_acts_only_for_the_identity_that_opened_it() -> TestResult {
    let cluster = ProcessCluster::start(3)?;
    cluster.issue_client("mallory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        cluster.wait_protocol(3).await?;
        let leader = cluster.leader().await?;
        let victim = cluster.raw_client(leader, "dev-client").await?;
        let mallory = cluster.raw_client(leader, "mallory").await?;
        assert_eq!(hello_identity(&victim).await?, "dev-client");
        assert_eq!(hello_identity(&mallory).await?, "mallory");

        // The victim holds a lock and leads an election.
        let victim_session = open_session(&victim).await?;
        let acquire = || {
            Op::Acquire(proto::Acquire {
                name: "victim/lock".into(),
                wait: false,
                timeout_ms: 0,
                ..Default::default()
            })
        };
        let granted = victim.ask_op(victim_session, 1, acquire()).await?;
        let Some(response::Result::Granted(grant)) = granted.result else {
            return Err(format!("victim not granted: {granted:?}").into());
        };
        let campaign = |value: &str| {
            Op::Campaign(proto::Campaign {
                election: "victim/election".into(),
                value: value.as_bytes().to_vec(),
                timeout_ms: 0,
            })
        };
        let elected = victim.ask_op(victim_session, 2, campaign("v")).await?;
        assert_eq!(code(&elected), None, "{elected:?}");

        // Another identity, with a session of its own, names the victim's.
        let mallory_session = open_session(&mallory).await?;
        let token = grant.fencing_token;
        let lock = "victim/lock".to_string();
        let election = "victim/election".to_string();
        let hostile = vec![
            Op::CancelAcquire(proto::CancelAcquire { name: lock.clone() }),
            Op::Release(proto::Release {
                name: lock.clone(),
                fencing_token: token,
            }),
            Op::Renew(proto::Renew {
                name: lock.clone(),
                fencing_token: token,
            }),
            acquire(),
            campaign("evil"),
            Op::Proclaim(proto::Proclaim {
                election: election.clone(),
                value: b"evil".to_vec(),
            }),
            Op::Resign(proto::Resign {
                election: election.clone(),
            }),
            Op::KeepAlive(proto::KeepAlive {}),
            Op::CloseSession(proto::CloseSession {}),
        ];
        for (i, op) in hostile.into_iter().enumerate() {
            let what = format!("{op:?}");
            let answer = mallory.ask_op(victim_session, 100 + i as u64, op).await?;
            assert_eq!(
                code(&answer),
                Some(ErrorCode::PermissionDenied),
                "{what} on another identity's session: {answer:?}"
            );
            let message = answer.error.map(|e| e.message).unwrap_or_default();
            assert!(message.contains("another identity"), "{message}");
        }
        // A retry of the victim's own request id gets a refusal, not the
        // victim's recorded answer; and an acknowledgement sent with it
        // does not drop that answer.
        let replay = mallory
            .ask(proto::Request {
                request_id: 1,
                session_id: victim_session,
                ack_below: 1_000,
                waiting: Vec::new(),
                op: Some(acquire()),
            })
            .await?;
        assert_eq!(
            code(&replay),
            Some(ErrorCode::PermissionDenied),
            "{replay:?}"
        );
        assert!(replay.result.is_none(), "{replay:?}");
        let retried = victim.ask_op(victim_session, 1, acquire()).await?;
        match retried.result {
            Some(response::Result::Granted(g)) => assert_eq!(g.fencing_token, token),
            other => return Err(format!("the victim's recorded answer is gone: {other:?}").into()),
        }

        // Nothing changed: the victim still holds its grant and leads, the
        // lock is busy for the other identity's own session.
        let renew = Op::Renew(proto::Renew {
            name: lock.clone(),
            fencing_token: token,
        });
        let renewed = victim.ask_op(victim_session, 3, renew).await?;
        assert_eq!(code(&renewed), None, "{renewed:?}");
        let busy = mallory.ask_op(mallory_session, 1, acquire()).await?;
        assert_eq!(code(&busy), Some(ErrorCode::Busy), "{busy:?}");
        let query = Op::QueryLeader(proto::QueryLeader {
            election: election.clone(),
        });
        let Some(response::Result::Leader(info)) = mallory.ask_op(0, 0, query).await?.result else {
            return Err("no leader info".into());
        };
        assert!(info.has_leader);
        assert_eq!(info.leader_session_id, victim_session);
        assert_eq!(info.leader_identity, "dev-client");
        assert_eq!(info.value, b"v".to_vec());

        // Opens are exactly-once per identity and key: a retry gets the
        // session its first copy opened; another identity's same key does
        // not reach it.
        let keyed = open_keyed(&victim, 77).await?;
        assert_eq!(
            open_keyed(&victim, 77).await?,
            keyed,
            "a retried open leaked a session"
        );
        assert_ne!(open_keyed(&mallory, 77).await?, keyed);

        // The victim's own requests still work: it resigns and releases.
        let resign = Op::Resign(proto::Resign { election });
        let resigned = victim.ask_op(victim_session, 4, resign).await?;
        assert_eq!(code(&resigned), None, "{resigned:?}");
        let release = Op::Release(proto::Release {
            name: lock,
            fencing_token: token,
        });
        let released = victim.ask_op(victim_session, 5, release).await?;
        assert_eq!(code(&released), None, "{released:?}");
        Ok(())
    })
}
