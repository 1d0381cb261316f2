use super::*;
use crate::locks::harness::Harness;
use crate::locks::{ClientOp, Output, Reply, StateMachine};

/// A waiter as the tests see it: the request it stands for.
type Req = &'static str;

fn register(wait: WaitFor, session: SessionId, name: &str, id: u64, req: Req) -> AfterApply<Req> {
    AfterApply::Register {
        wait,
        key: (session.0, name.to_string()),
        id,
        waiter: req,
    }
}

/// Applies `out` to the book as the node does: `own` read from the state.
fn apply(
    book: &mut WaiterBook<Req>,
    machine: &StateMachine,
    out: &Output,
    own: Option<AfterApply<Req>>,
) -> Settled<Req> {
    book.applied(out, own.map(|o| o.read(machine, out)))
}

/// Each woken request with what woke it: a grant's token or a win's term.
fn woken(s: &Settled<Req>) -> Vec<(WaitFor, Req, u64)> {
    s.woken
        .iter()
        .map(|(w, k)| match k {
            Woken::Granted(token) | Woken::GrantedShared { token, .. } => {
                (WaitFor::Grant, *w, token.0)
            }
            Woken::Won { term, .. } => (WaitFor::Win, *w, *term),
        })
        .collect()
}

fn dropped(s: &Settled<Req>) -> Vec<Req> {
    s.dropped.iter().map(|(_, r)| *r).collect()
}

#[test]
fn a_queued_acquire_is_answered_by_its_grant_with_the_token() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", false);
    let queued = h.acquire(b, "l", true);
    assert!(matches!(queued.reply, Ok(Reply::Queued { .. })));
    let s = apply(
        &mut book,
        &h.sm,
        &queued,
        Some(register(WaitFor::Grant, b, "l", 1, "b")),
    );
    assert!(s.is_empty());
    assert_eq!(book.len(), 1);
    let token = h.token(a, "l");
    let released = h.release(a, "l", token);
    let s = book.applied(&released, None);
    let granted = h.sm.holder("l").expect("granted to b").token.0;
    assert_eq!(woken(&s), vec![(WaitFor::Grant, "b", granted)]);
    assert!(book.is_empty());
}

#[test]
fn a_refused_command_registers_nothing_and_its_waiter_is_dropped() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let a = h.open();
    let gone = SessionId(a.0 + 1_000);
    let refused = h.op(
        gone,
        ClientOp::Acquire {
            name: "l".into(),
            wait: true,
            value: Vec::new(),
        },
    );
    assert!(refused.reply.is_err());
    let s = apply(
        &mut book,
        &h.sm,
        &refused,
        Some(register(WaitFor::Grant, gone, "l", 1, "x")),
    );
    assert_eq!(dropped(&s), vec!["x"]);
    assert!(book.is_empty());
}

#[test]
fn an_older_grant_applied_before_the_command_does_not_answer_it() {
    // A node catching up applies a's grant, a's release and a's second,
    // queued acquire in order: the first grant must not answer the second.
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b) = (h.open(), h.open());
    let first = h.acquire(a, "l", false);
    assert!(book.applied(&first, None).woken.is_empty());
    let token = h.token(a, "l");
    h.release(a, "l", token);
    h.acquire(b, "l", false);
    let second = h.acquire(a, "l", true);
    assert!(matches!(second.reply, Ok(Reply::Queued { .. })));
    let s = apply(
        &mut book,
        &h.sm,
        &second,
        Some(register(WaitFor::Grant, a, "l", 7, "a2")),
    );
    assert!(s.woken.is_empty(), "{s:?}");
    assert_eq!(book.len(), 1);
}

#[test]
fn a_cancel_drops_the_waiters_before_it_and_only_if_it_took_effect() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", false);
    let queued = h.acquire(b, "l", true);
    apply(
        &mut book,
        &h.sm,
        &queued,
        Some(register(WaitFor::Grant, b, "l", 1, "b")),
    );
    let cancel = h.op(b, ClientOp::CancelAcquire { name: "l".into() });
    let mut duplicate = cancel.clone();
    duplicate.duplicate = true;
    let s = apply(
        &mut book,
        &h.sm,
        &duplicate,
        Some(AfterApply::DropLockWaiters((b.0, "l".into()))),
    );
    assert!(s.dropped.is_empty(), "a duplicate cancel drops nothing");
    let s = apply(
        &mut book,
        &h.sm,
        &cancel,
        Some(AfterApply::DropLockWaiters((b.0, "l".into()))),
    );
    assert_eq!(dropped(&s), vec!["b"]);
    // A later acquire's waiter, registered after the cancel, stays.
    let again = h.acquire(b, "l", true);
    apply(
        &mut book,
        &h.sm,
        &again,
        Some(register(WaitFor::Grant, b, "l", 2, "b-again")),
    );
    assert_eq!(book.len(), 1);
}

#[test]
fn a_session_end_drops_only_that_sessions_waiters() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", false);
    for (s, req) in [(b, "b"), (c, "c")] {
        let out = h.acquire(s, "l", true);
        book.applied(
            &out,
            Some(register(WaitFor::Grant, s, "l", 1, req).read(&h.sm, &out)),
        );
        let out = h.campaign(s, "e", b"v");
        book.applied(
            &out,
            Some(register(WaitFor::Win, s, "e", 2, req).read(&h.sm, &out)),
        );
    }
    // b won "e" at once (first candidate): its reply answered it, so only
    // c waits for the win; b's end hands "e" to c.
    let ended = h.expire(b);
    let s = book.applied(&ended, None);
    assert_eq!(dropped(&s), vec!["b"], "b's queued acquire");
    let term = h.sm.leader("e").expect("c leads").term;
    assert_eq!(woken(&s), vec![(WaitFor::Win, "c", term)]);
    assert!(book.keys().all(|(_, key)| key.0 == c.0));
    assert!(
        !s.published.is_empty(),
        "b's leadership ended: watchers hear it"
    );
}

#[test]
fn a_campaign_is_answered_by_its_win_with_the_term_and_watchers_hear_every_change() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b) = (h.open(), h.open());
    let first = h.campaign(a, "e", b"a");
    assert_eq!(book.applied(&first, None).published.len(), 1);
    let second = h.campaign(b, "e", b"b");
    book.applied(
        &second,
        Some(register(WaitFor::Win, b, "e", 1, "b").read(&h.sm, &second)),
    );
    let resigned = h.op(a, ClientOp::Resign { name: "e".into() });
    let s = book.applied(&resigned, None);
    let term = h.sm.leader("e").expect("b leads").term;
    assert_eq!(woken(&s), vec![(WaitFor::Win, "b", term)]);
    assert!(s.published.iter().all(|e| e.name == "e"));
}

#[test]
fn a_restored_state_answers_the_waiters_it_settled_and_drops_the_hopeless() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b, c, d) = (h.open(), h.open(), h.open(), h.open());
    h.acquire(a, "granted", false);
    h.acquire(a, "still", false);
    h.acquire(a, "gone", false);
    for (s, name, req) in [(b, "granted", "b"), (c, "still", "c"), (d, "gone", "d")] {
        let out = h.acquire(s, name, true);
        book.applied(
            &out,
            Some(register(WaitFor::Grant, s, name, 1, req).read(&h.sm, &out)),
        );
    }
    // Applied elsewhere, arriving here only as a snapshot: a releases
    // "granted" (b gets it) and d's session expires.
    let token = h.token(a, "granted");
    h.release(a, "granted", token);
    h.expire(d);
    let restored = StateMachine::restore(&h.snapshot()).expect("snapshot");
    let s = book.restored(&restored);
    let token_b = restored.holder("granted").expect("b holds").token.0;
    assert_eq!(woken(&s), vec![(WaitFor::Grant, "b", token_b)]);
    assert_eq!(dropped(&s), vec!["d"]);
    assert_eq!(book.len(), 1, "c still waits: still queued");
}

#[test]
fn a_withdrawn_waiter_leaves_the_others_of_its_key_waiting() {
    let mut book: WaiterBook<Req> = WaiterBook::default();
    let key = (7, "l".to_string());
    book.add(WaitFor::Grant, key.clone(), 1, "gave up");
    book.add(WaitFor::Grant, key.clone(), 2, "retry");
    assert_eq!(book.withdraw(WaitFor::Grant, &key, 1), Some("gave up"));
    assert_eq!(book.withdraw(WaitFor::Grant, &key, 1), None);
    assert_eq!(
        book.withdraw(WaitFor::Win, &key, 2),
        None,
        "a win waiter is another"
    );
    assert_eq!(book.len(), 1);
}

#[test]
fn a_retried_acquire_told_queued_after_its_grant_is_answered_at_once() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", false);
    let queued = h.acquire(b, "l", true);
    let token = h.token(a, "l");
    h.release(a, "l", token);
    // b's retry gets the recorded answer (Queued) though b holds the lock.
    let mut retry = queued.clone();
    retry.duplicate = true;
    let s = apply(
        &mut book,
        &h.sm,
        &retry,
        Some(register(WaitFor::Grant, b, "l", 2, "retry")),
    );
    let granted = h.sm.holder("l").expect("b holds").token.0;
    assert_eq!(woken(&s), vec![(WaitFor::Grant, "retry", granted)]);
    assert!(book.is_empty(), "nothing left asleep");
}

#[test]
fn an_answered_command_leaves_no_waiter() {
    let mut h = Harness::small();
    let mut book = WaiterBook::default();
    let a = h.open();
    let granted = h.acquire(a, "l", true);
    assert!(matches!(granted.reply, Ok(Reply::Granted { .. })));
    let s = apply(
        &mut book,
        &h.sm,
        &granted,
        Some(register(WaitFor::Grant, a, "l", 1, "a")),
    );
    assert_eq!(dropped(&s), vec!["a"]);
    let elected = h.campaign(a, "e", b"v");
    let s = apply(
        &mut book,
        &h.sm,
        &elected,
        Some(register(WaitFor::Win, a, "e", 2, "a")),
    );
    assert_eq!(dropped(&s), vec!["a"]);
    assert!(book.is_empty());
}

#[test]
fn most_commands_do_not_concern_an_empty_book() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    let granted = h.acquire(a, "l", true);
    let own = register(WaitFor::Grant, a, "l", 1, "a").read(&h.sm, &granted);
    assert!(
        !WaiterBook::concerns(&granted, Some(&own), 0),
        "answered by its reply"
    );
    assert!(
        WaiterBook::concerns(&granted, Some(&own), 1),
        "someone may wait for it"
    );
    let queued = h.acquire(b, "l", true);
    let own = register(WaitFor::Grant, b, "l", 2, "b").read(&h.sm, &queued);
    assert!(
        WaiterBook::concerns(&queued, Some(&own), 0),
        "it waits: register it"
    );
    let campaign = h.campaign(a, "e", b"v");
    assert!(
        WaiterBook::<Req>::concerns(&campaign, None, 0),
        "watchers hear it"
    );
}
