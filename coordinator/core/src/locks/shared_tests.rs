//! Semaphores and read/write locks in the state machine: permits and
//! slots, FIFO without barging, readers admitted together, fencing tokens,
//! lock-delays per permit and per mode, one kind per name.

use crate::locks::command::{ClientOp, CommandKind, FencingToken, SessionId, CURRENT_PROTOCOL};
use crate::locks::error::CommandError;
use crate::locks::harness::{err, Harness};
use crate::locks::machine::{Reply, StateMachine};
use crate::locks::shared::Mode;
use crate::locks::Output;

fn raised() -> Harness {
    let mut h = Harness::small();
    h.sm.config.lock_delay_ms = 100;
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    h
}

fn permit(h: &mut Harness, s: SessionId, name: &str, permits: u32, wait: bool) -> Output {
    h.op(
        s,
        ClientOp::AcquireShared {
            name: name.into(),
            wait,
            mode: Mode::Permit,
            permits,
        },
    )
}

fn rw(h: &mut Harness, s: SessionId, name: &str, mode: Mode, wait: bool) -> Output {
    h.op(
        s,
        ClientOp::AcquireShared {
            name: name.into(),
            wait,
            mode,
            permits: 0,
        },
    )
}

/// The (token, slot) a reply grants; panics on anything else.
fn granted(out: &Output) -> (FencingToken, Option<u32>) {
    let (token, _, slot) = granted_fencing(out);
    (token, slot)
}

/// The (token, fencing value, slot) a reply grants.
fn granted_fencing(out: &Output) -> (FencingToken, FencingToken, Option<u32>) {
    match out.reply {
        Ok(Reply::Granted { token }) => (token, token, None),
        Ok(Reply::GrantedShared { token, shared }) => (token, shared.fencing, shared.slot),
        ref other => panic!("not granted: {other:?}"),
    }
}

fn queued(out: &Output) -> u32 {
    match out.reply {
        Ok(Reply::Queued { position }) => position,
        ref other => panic!("not queued: {other:?}"),
    }
}

/// Every grant in `out`'s events: (session, fencing value, slot).
fn grants_of(out: &Output) -> Vec<(SessionId, FencingToken, Option<u32>)> {
    out.events
        .iter()
        .filter_map(|e| match e {
            crate::locks::Event::LockGranted {
                session,
                token,
                shared,
                ..
            } => Some((
                *session,
                shared.map_or(*token, |s| s.fencing),
                shared.and_then(|s| s.slot),
            )),
            _ => None,
        })
        .collect()
}

fn release(h: &mut Harness, s: SessionId, name: &str, token: FencingToken) -> Output {
    h.op(
        s,
        ClientOp::Release {
            name: name.into(),
            token,
        },
    )
}

#[test]
fn a_semaphore_grants_at_most_its_permits_each_in_a_slot_with_a_new_token() {
    let mut h = raised();
    let (a, b, c, d) = (h.open(), h.open(), h.open(), h.open());
    let (ta, sa) = granted(&permit(&mut h, a, "pool", 2, true));
    let (tb, sb) = granted(&permit(&mut h, b, "pool", 2, true));
    assert_eq!((sa, sb), (Some(0), Some(1)));
    assert!(tb > ta);
    assert_eq!(queued(&permit(&mut h, c, "pool", 2, true)), 1);
    assert!(matches!(
        permit(&mut h, d, "pool", 2, false).reply,
        Ok(Reply::Busy { current: Some(t), .. }) if t == tb
    ));
    // Re-acquiring answers the same grant.
    assert_eq!(granted(&permit(&mut h, a, "pool", 2, true)), (ta, Some(0)));
    let out = release(&mut h, a, "pool", ta);
    let [(who, tc, slot)] = grants_of(&out)[..] else {
        panic!("one grant expected: {:?}", out.events)
    };
    assert_eq!(
        (who, slot),
        (c, Some(0)),
        "the freed slot goes to the first waiter"
    );
    assert!(tc > tb, "every permit grant draws a new token");
    assert_eq!(h.sm.shared_lock("pool").unwrap().grants.len(), 2);
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

#[test]
fn a_name_keeps_its_kind_and_a_semaphore_its_permits_while_in_use() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    granted(&permit(&mut h, a, "s", 3, true));
    assert!(matches!(
        err(&permit(&mut h, b, "s", 4, true)),
        Some(CommandError::PermitsMismatch {
            permits: 3,
            asked: 4,
            ..
        })
    ));
    assert!(matches!(
        err(&rw(&mut h, b, "s", Mode::Read, true)),
        Some(CommandError::WrongKind { .. })
    ));
    assert!(matches!(
        err(&h.acquire(b, "s", true)),
        Some(CommandError::WrongKind { .. })
    ));
    h.acquire(a, "plain", true);
    assert!(matches!(
        err(&permit(&mut h, b, "plain", 3, true)),
        Some(CommandError::WrongKind { .. })
    ));
    assert!(matches!(
        err(&rw(&mut h, b, "plain", Mode::Write, true)),
        Some(CommandError::WrongKind { .. })
    ));
    assert!(matches!(
        err(&permit(&mut h, b, "zero", 0, true)),
        Some(CommandError::PermitsOutOfRange { asked: 0, .. })
    ));
    // Once nobody uses it, a name may become another kind.
    let token = h.sm.shared_lock("s").unwrap().grants[0].token;
    release(&mut h, a, "s", token);
    assert!(h.sm.shared_lock("s").is_none());
    granted(&rw(&mut h, b, "s", Mode::Read, true));
}

#[test]
fn a_plain_acquire_of_a_read_write_lock_takes_it_for_writing() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    let (read, _) = granted(&rw(&mut h, a, "rw", Mode::Read, true));
    assert_eq!(queued(&h.acquire(b, "rw", true)), 1);
    let out = release(&mut h, a, "rw", read);
    let [(who, write, None)] = grants_of(&out)[..] else {
        panic!("{:?}", out.events)
    };
    assert_eq!(who, b);
    assert!(write > read);
    assert_eq!(h.sm.shared_lock("rw").unwrap().grants[0].mode, Mode::Write);
    // A value is kept with plain locks only: refused, never dropped.
    let c = h.open();
    assert!(matches!(
        err(&h.op(
            c,
            ClientOp::Acquire {
                name: "rw".into(),
                wait: true,
                value: b"v".to_vec()
            }
        )),
        Some(CommandError::WrongKind { .. })
    ));
}

#[test]
fn a_queued_writer_is_not_passed_by_later_readers_who_then_enter_together() {
    let mut h = raised();
    let s: Vec<SessionId> = (0..5).map(|_| h.open()).collect();
    let (t1, r1, _) = granted_fencing(&rw(&mut h, s[0], "rw", Mode::Read, true));
    let (t2, r2, _) = granted_fencing(&rw(&mut h, s[1], "rw", Mode::Read, true));
    assert_eq!(r1, r2, "readers holding together fence with one value");
    assert!(t2 > t1, "but each grant has a token of its own");
    assert_eq!(queued(&rw(&mut h, s[2], "rw", Mode::Write, true)), 1);
    // No barging: later readers queue behind the writer.
    assert_eq!(queued(&rw(&mut h, s[3], "rw", Mode::Read, true)), 2);
    assert_eq!(queued(&rw(&mut h, s[4], "rw", Mode::Read, true)), 3);
    assert!(matches!(
        rw(&mut h, s[3], "rw", Mode::Read, false).reply,
        Ok(Reply::Queued { position: 2 })
    ));
    assert!(grants_of(&release(&mut h, s[0], "rw", t1)).is_empty());
    let out = release(&mut h, s[1], "rw", t2);
    let [(writer, w, None)] = grants_of(&out)[..] else {
        panic!("{:?}", out.events)
    };
    assert_eq!(writer, s[2]);
    assert!(w > t2, "a writer's token is above every grant before it");
    let out = release(&mut h, s[2], "rw", w);
    let readers = grants_of(&out);
    assert_eq!(
        readers.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![s[3], s[4]],
        "the readers queued behind the writer are admitted together"
    );
    assert_eq!(
        readers[0].1, readers[1].1,
        "admitted together, one fencing value"
    );
    assert!(readers[0].1 > w, "and fence the writer before them");
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

#[test]
fn a_read_phase_after_none_held_draws_a_new_token() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    let (first, _) = granted(&rw(&mut h, a, "rw", Mode::Read, true));
    release(&mut h, a, "rw", first);
    let (second, fencing, _) = granted_fencing(&rw(&mut h, b, "rw", Mode::Read, true));
    assert!(second > first);
    assert_eq!(
        fencing, second,
        "the first reader fences with its own token"
    );
}

/// Found by the lock simulator (seed 12000270), when readers shared one
/// token for both fencing and naming their grants: a session that read,
/// released and read again while another reader held got the same token
/// twice, so a stray release of its first grant (an application's retry)
/// ended the second, which its client still believed it held, and a
/// writer was granted beside it. Each grant now has a token of its own.
#[test]
fn a_stray_release_of_an_earlier_read_does_not_end_a_later_one_of_the_same_phase() {
    let mut h = raised();
    let (a, b, w) = (h.open(), h.open(), h.open());
    granted(&rw(&mut h, a, "rw", Mode::Read, true));
    let (first, f1, _) = granted_fencing(&rw(&mut h, b, "rw", Mode::Read, true));
    release(&mut h, b, "rw", first);
    let (second, f2, _) = granted_fencing(&rw(&mut h, b, "rw", Mode::Read, true));
    assert_eq!(f1, f2, "the same read phase fences with one value");
    assert_ne!(first, second);
    assert!(matches!(
        err(&release(&mut h, b, "rw", first)),
        Some(CommandError::StaleToken { .. })
    ));
    assert_eq!(queued(&rw(&mut h, w, "rw", Mode::Write, true)), 1);
    assert!(h.sm.shared_lock("rw").unwrap().grant_of(b).is_some());
}

#[test]
fn a_writer_leaving_the_front_of_the_queue_lets_the_readers_behind_it_in() {
    let mut h = raised();
    let (a, w, r) = (h.open(), h.open(), h.open());
    granted(&rw(&mut h, a, "rw", Mode::Read, true));
    queued(&rw(&mut h, w, "rw", Mode::Write, true));
    queued(&rw(&mut h, r, "rw", Mode::Read, true));
    let out = h.op(w, ClientOp::CancelAcquire { name: "rw".into() });
    assert_eq!(
        grants_of(&out).iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![r]
    );
    // And when its session ends instead.
    let (x, y) = (h.open(), h.open());
    queued(&rw(&mut h, x, "rw", Mode::Write, true));
    queued(&rw(&mut h, y, "rw", Mode::Read, true));
    let out = h.op(x, ClientOp::CloseSession);
    assert_eq!(
        grants_of(&out).iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![y]
    );
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

#[test]
fn an_expired_permit_delays_its_slot_only() {
    let mut h = raised();
    let (a, b, c) = (h.open(), h.open(), h.open());
    granted(&permit(&mut h, a, "pool", 2, true));
    h.expire(a);
    // Slot 0 is delayed; slot 1 is free.
    assert_eq!(granted(&permit(&mut h, b, "pool", 2, true)).1, Some(1));
    assert_eq!(queued(&permit(&mut h, c, "pool", 2, true)), 1);
    h.at_ms += 100;
    let out = h.apply(CommandKind::Tick);
    let [(who, _, slot)] = grants_of(&out)[..] else {
        panic!("{:?}", out.events)
    };
    assert_eq!((who, slot), (c, Some(0)));
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

#[test]
fn an_expired_reader_delays_writers_and_an_expired_writer_everyone() {
    let mut h = raised();
    let (a, b, c) = (h.open(), h.open(), h.open());
    granted(&rw(&mut h, a, "rw", Mode::Read, true));
    h.expire(a);
    assert!(matches!(
        rw(&mut h, b, "rw", Mode::Write, false).reply,
        Ok(Reply::Busy {
            delayed_until_ms: Some(100),
            ..
        })
    ));
    let (read, _) = granted(&rw(&mut h, c, "rw", Mode::Read, true));
    release(&mut h, c, "rw", read);
    queued(&rw(&mut h, b, "rw", Mode::Write, true));
    h.at_ms = 100;
    let out = h.apply(CommandKind::Tick);
    assert_eq!(
        grants_of(&out).iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![b]
    );
    h.expire(b);
    assert!(matches!(
        rw(&mut h, c, "rw", Mode::Read, false).reply,
        Ok(Reply::Busy {
            delayed_until_ms: Some(200),
            ..
        })
    ));
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

#[test]
fn a_session_holds_one_mode_at_a_time() {
    let mut h = raised();
    let a = h.open();
    granted(&rw(&mut h, a, "rw", Mode::Read, true));
    assert!(matches!(
        err(&rw(&mut h, a, "rw", Mode::Write, true)),
        Some(CommandError::ModeHeld { .. })
    ));
}

#[test]
fn tokens_are_checked_per_session_and_stale_ones_refused() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    let (ta, fa, _) = granted_fencing(&rw(&mut h, a, "rw", Mode::Read, true));
    let (tb, fb, _) = granted_fencing(&rw(&mut h, b, "rw", Mode::Read, true));
    assert_eq!(fa, fb);
    assert_ne!(ta, tb);
    let check = |name: &str, token| ClientOp::Check {
        name: name.into(),
        token,
    };
    assert!(matches!(h.op(a, check("rw", ta)).reply, Ok(Reply::Valid)));
    release(&mut h, a, "rw", ta);
    assert!(matches!(
        err(&h.op(a, check("rw", ta))),
        Some(CommandError::StaleToken { .. })
    ));
    assert!(matches!(h.op(b, check("rw", tb)).reply, Ok(Reply::Valid)));
    assert!(matches!(
        err(&release(&mut h, a, "rw", ta)),
        Some(CommandError::StaleToken { .. })
    ));
}

#[test]
fn permits_count_against_the_locks_a_session_may_hold_and_the_waiter_bound() {
    let mut h = raised();
    let a = h.open();
    for i in 0..4 {
        granted(&permit(&mut h, a, &format!("s{i}"), 1, true));
    }
    assert!(matches!(
        err(&permit(&mut h, a, "s4", 1, true)),
        Some(CommandError::TooManyLocks { .. })
    ));
    let holder = h.open();
    granted(&permit(&mut h, holder, "full", 1, true));
    for _ in 0..4 {
        let s = h.open();
        queued(&permit(&mut h, s, "full", 1, true));
    }
    let late = h.open();
    assert!(matches!(
        err(&permit(&mut h, late, "full", 1, true)),
        Some(CommandError::WaitQueueFull { max: 4, .. })
    ));
}

#[test]
fn shared_locks_survive_a_snapshot_and_apply_the_same_after_it() {
    let mut h = raised();
    let (a, b, c) = (h.open(), h.open(), h.open());
    granted(&permit(&mut h, a, "pool", 1, true));
    queued(&permit(&mut h, b, "pool", 1, true));
    granted(&rw(&mut h, c, "rw", Mode::Read, true));
    h.expire(c);
    let restored = StateMachine::restore(&h.snapshot()).expect("restores");
    assert_eq!(restored, h.sm);
    let token = h.sm.shared_lock("pool").unwrap().grants[0].token;
    let release = h.fresh(
        a,
        ClientOp::Release {
            name: "pool".into(),
            token,
        },
    );
    let mut twin = restored;
    let command = |kind| crate::locks::Command {
        at_ms: h.at_ms,
        kind,
    };
    let right = twin.apply(h.slot + 1, command(release.clone()));
    let left = h.apply(release);
    assert_eq!(left, right);
    assert_eq!(twin, h.sm);
    assert_eq!(
        grants_of(&left).iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![b]
    );
}

#[test]
fn an_administrator_takes_one_grant_by_its_token_and_its_slot_waits_out_the_ttl() {
    let mut h = raised();
    let (a, b, c) = (h.open(), h.open(), h.open());
    let (ta, _) = granted(&permit(&mut h, a, "pool", 2, true));
    granted(&permit(&mut h, b, "pool", 2, true));
    queued(&permit(&mut h, c, "pool", 2, true));
    assert!(matches!(
        h.sm.grant_to_take("pool", None),
        Err(CommandError::GrantUnnamed { holders: 2, .. })
    ));
    assert_eq!(h.sm.grant_to_take("pool", Some(ta)), Ok((a, ta)));
    let out = h.apply(CommandKind::ForceRelease {
        by: crate::locks::Identity("admin".into()),
        name: "pool".into(),
        token: ta,
    });
    assert!(
        matches!(out.reply, Ok(Reply::Taken { session, token }) if session == a && token == ta)
    );
    assert!(grants_of(&out).is_empty(), "slot 0 waits out a's TTL");
    assert_eq!(h.sm.taken_grants(a), vec![ta], "a's keepalives name it");
    assert!(h.sm.has_session(a), "a's session lives on");
    h.at_ms += 1_000;
    let out = h.apply(CommandKind::Tick);
    assert_eq!(
        grants_of(&out)
            .iter()
            .map(|g| (g.0, g.2))
            .collect::<Vec<_>>(),
        vec![(c, Some(0))]
    );
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

/// Found by the lock simulator (seed 13000037), when every reader after
/// none held began a new fencing epoch: a force-released reader, whose
/// client rightly believed it held until a keepalive told it, had its
/// writes refused for the next reader's, though readers never exclude each
/// other. The read epoch now lasts from one writer to the next (kept
/// through the taken reader's lock-delay); a writer still fences off every
/// reader before it, and readers after it the writer.
#[test]
fn readers_share_an_epoch_until_a_writer_and_a_taken_reader_is_not_fenced_by_the_next() {
    let mut h = raised();
    let (a, b, w) = (h.open(), h.open(), h.open());
    let (ta, fa, _) = granted_fencing(&rw(&mut h, a, "rw", Mode::Read, true));
    h.apply(CommandKind::ForceRelease {
        by: crate::locks::Identity("admin".into()),
        name: "rw".into(),
        token: ta,
    });
    let (tb, fb, _) = granted_fencing(&rw(&mut h, b, "rw", Mode::Read, true));
    assert!(tb > ta);
    assert_eq!(fb, fa, "no writer between: the taken reader's epoch");
    release(&mut h, b, "rw", tb);
    h.at_ms += 1_000;
    h.apply(CommandKind::Tick);
    let (tw, fw, _) = granted_fencing(&rw(&mut h, w, "rw", Mode::Write, true));
    assert_eq!(tw, fw);
    assert!(fw > fb);
    release(&mut h, w, "rw", tw);
    let (tc, fc, _) = granted_fencing(&rw(&mut h, a, "rw", Mode::Read, true));
    assert_eq!(fc, tc, "the first reader after a writer begins an epoch");
    assert!(fc > fw);
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

/// However many sessions the cluster allows, a read/write lock has at most
/// `MAX_HOLDERS` readers at once (what a description of it carries is
/// bounded so); the next reader waits and enters when one leaves.
#[test]
fn readers_past_the_holder_bound_wait_their_turn() {
    use crate::locks::shared::MAX_HOLDERS;
    let mut config = Harness::small().sm.config().clone();
    config.limits.max_sessions = 2 * MAX_HOLDERS as u32;
    let mut h = Harness::new(config);
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    let readers: Vec<SessionId> = (0..MAX_HOLDERS).map(|_| h.open()).collect();
    for r in &readers {
        granted(&rw(&mut h, *r, "rw", Mode::Read, true));
    }
    let late = h.open();
    assert_eq!(queued(&rw(&mut h, late, "rw", Mode::Read, true)), 1);
    let token = h.sm.shared_lock("rw").unwrap().grants[0].token;
    let out = release(&mut h, readers[0], "rw", token);
    assert_eq!(
        grants_of(&out).iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![late]
    );
    assert_eq!(h.sm.check_invariants(), Ok(()));
}
