use super::*;

fn op(client: ClientId, call: Call, outcome: Outcome, inv: u64, comp: Option<u64>) -> Operation {
    Operation {
        client,
        call,
        outcome,
        invoked_at: inv,
        completed_at: comp,
    }
}

const BUDGET: u64 = 100_000;
const A: ClientId = 1;
const B: ClientId = 2;

fn granted(token: u64) -> Outcome {
    Outcome::Granted { token }
}

fn is_violation(v: &Verdict) -> bool {
    matches!(v, Verdict::NotLinearizable { .. })
}

#[test]
fn valid_concurrent_history_passes() {
    let h = [
        op(A, Call::Acquire, granted(5), 0, Some(10)),
        op(B, Call::Acquire, Outcome::Busy, 2, Some(12)),
        op(
            A,
            Call::Release { token: 5 },
            Outcome::Released,
            11,
            Some(20),
        ),
        // Overlaps the release: linearizes after it.
        op(B, Call::Acquire, granted(8), 15, Some(30)),
        op(B, Call::Check { token: 8 }, Outcome::Valid, 31, Some(32)),
        op(A, Call::Release { token: 5 }, Outcome::Stale, 31, Some(33)),
    ];
    assert_eq!(check_lock_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn two_overlapping_holders_fail() {
    let h = [
        op(A, Call::Acquire, granted(1), 0, Some(5)),
        op(B, Call::Acquire, granted(2), 6, Some(10)),
        op(
            A,
            Call::Release { token: 1 },
            Outcome::Released,
            11,
            Some(12),
        ),
    ];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn decreasing_token_fails() {
    let h = [
        op(A, Call::Acquire, granted(5), 0, Some(1)),
        op(A, Call::Release { token: 5 }, Outcome::Released, 2, Some(3)),
        op(B, Call::Acquire, granted(3), 4, Some(5)),
    ];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn grant_while_held_fails_even_without_release() {
    let h = [
        op(A, Call::Acquire, granted(1), 0, Some(1)),
        op(B, Call::Acquire, granted(2), 2, Some(3)),
    ];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn busy_on_a_free_lock_fails() {
    let h = [op(B, Call::Acquire, Outcome::Busy, 0, Some(1))];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn busy_during_lock_delay_after_expiry_passes() {
    let h = [
        op(A, Call::Acquire, granted(1), 0, Some(1)),
        op(
            A,
            Call::EndSession { expired: true },
            Outcome::Ended,
            2,
            Some(2),
        ),
        op(B, Call::Acquire, Outcome::Busy, 3, Some(4)),
        op(B, Call::Acquire, granted(4), 5, Some(6)),
    ];
    assert_eq!(check_lock_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn unknown_acquire_may_have_taken_effect() {
    // A's acquire never answered; B saw the lock busy, so A's grant must
    // have happened (and is the only explanation).
    let h = [
        op(A, Call::Acquire, Outcome::Unknown, 0, None),
        op(B, Call::Acquire, Outcome::Busy, 5, Some(6)),
        op(
            A,
            Call::EndSession { expired: true },
            Outcome::Ended,
            7,
            Some(7),
        ),
        op(B, Call::Acquire, granted(3), 8, Some(9)),
    ];
    assert_eq!(check_lock_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn unknown_acquire_may_never_have_taken_effect() {
    let h = [
        op(A, Call::Acquire, Outcome::Unknown, 0, None),
        op(B, Call::Acquire, granted(1), 5, Some(6)),
    ];
    assert_eq!(check_lock_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn unseen_grant_forces_later_tokens_higher() {
    // A's unknown acquire must have granted (B saw busy) with a token >= 1,
    // so after A's session ends B cannot be granted token 1.
    let h = [
        op(A, Call::Acquire, Outcome::Unknown, 0, None),
        op(B, Call::Acquire, Outcome::Busy, 5, Some(6)),
        op(
            A,
            Call::EndSession { expired: false },
            Outcome::Ended,
            7,
            Some(7),
        ),
        op(B, Call::Acquire, granted(1), 8, Some(9)),
    ];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn reacquire_returns_same_token_or_fails() {
    let same = [
        op(A, Call::Acquire, granted(3), 0, Some(1)),
        op(A, Call::Acquire, granted(3), 2, Some(3)),
    ];
    assert_eq!(check_lock_history(&same, BUDGET), Verdict::Linearizable);
    let different = [
        op(A, Call::Acquire, granted(3), 0, Some(1)),
        op(A, Call::Acquire, granted(4), 2, Some(3)),
    ];
    assert!(is_violation(&check_lock_history(&different, BUDGET)));
}

#[test]
fn release_with_wrong_token_reported_ok_fails() {
    let h = [
        op(A, Call::Acquire, granted(3), 0, Some(1)),
        op(A, Call::Release { token: 2 }, Outcome::Released, 2, Some(3)),
    ];
    assert!(is_violation(&check_lock_history(&h, BUDGET)));
}

#[test]
fn cancel_after_grant_releases_for_next_client() {
    let h = [
        op(A, Call::Acquire, Outcome::Unknown, 0, Some(4)),
        op(
            A,
            Call::Cancel,
            Outcome::Cancelled { released: true },
            3,
            Some(4),
        ),
        op(B, Call::Acquire, granted(9), 5, Some(6)),
    ];
    assert_eq!(check_lock_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn search_over_budget_answers_unknown() {
    // Many fully concurrent try-acquires that all report Busy except one
    // grant: the search has a large space; a tiny budget must stop it.
    let mut h = vec![op(A, Call::Acquire, granted(1), 0, Some(1000))];
    for c in 0..40 {
        h.push(op(10 + c, Call::Acquire, Outcome::Busy, 0, Some(1000)));
    }
    h.push(op(B, Call::Acquire, Outcome::Busy, 0, Some(1)));
    assert!(matches!(
        check_lock_history(&h, 10),
        Verdict::Unknown { .. }
    ));
}

#[test]
fn malformed_history_is_reported() {
    let h = [op(A, Call::Acquire, granted(1), 5, Some(4))];
    assert!(matches!(
        check_lock_history(&h, BUDGET),
        Verdict::InvalidHistory { index: 0, .. }
    ));
}

#[test]
fn check_all_names_the_failing_lock() {
    let mut by_lock = BTreeMap::new();
    by_lock.insert(
        "ok".to_owned(),
        vec![op(A, Call::Acquire, granted(1), 0, Some(1))],
    );
    by_lock.insert(
        "bad".to_owned(),
        vec![op(A, Call::Acquire, Outcome::Busy, 0, Some(1))],
    );
    let err = check_all(&by_lock, BUDGET).err().map(|(name, _)| name);
    assert_eq!(err.as_deref(), Some("bad"));
}

#[test]
fn long_sequential_history_checks_within_a_small_budget() {
    // 3000 operations, each acquire/release pair by a rotating client, with
    // a concurrent busy probe: memoization keeps the work near linear.
    let mut h = Vec::new();
    let mut t = 0;
    for i in 0..1000u64 {
        let c = i % 3;
        h.push(op(c, Call::Acquire, granted(i + 1), t, Some(t + 2)));
        h.push(op(c + 10, Call::Acquire, Outcome::Busy, t + 3, Some(t + 5)));
        h.push(op(
            c,
            Call::Release { token: i + 1 },
            Outcome::Released,
            t + 4,
            Some(t + 6),
        ));
        t += 10;
    }
    assert_eq!(check_lock_history(&h, 20_000), Verdict::Linearizable);
}

#[test]
fn a_force_release_takes_only_the_grant_it_names() {
    // A's grant 5 taken: B is granted after, with a higher token.
    let taken = [
        op(A, Call::Acquire, granted(5), 0, Some(10)),
        op(
            A,
            Call::ForceReleased { token: 5 },
            Outcome::Ended,
            11,
            Some(12),
        ),
        op(B, Call::Acquire, granted(8), 13, Some(20)),
    ];
    assert_eq!(check_lock_history(&taken, BUDGET), Verdict::Linearizable);
    // Observed taking grant 4, which A never held: impossible.
    let other = [
        op(A, Call::Acquire, granted(5), 0, Some(10)),
        op(
            A,
            Call::ForceReleased { token: 4 },
            Outcome::Ended,
            11,
            Some(12),
        ),
    ];
    assert!(is_violation(&check_lock_history(&other, BUDGET)));
    // Of unknown outcome, it cannot take A's later grant 9: B's grant
    // while A holds 9 stays a violation (a force-release naming no grant
    // would explain it away).
    let later = [
        op(A, Call::Acquire, granted(5), 0, Some(10)),
        op(
            A,
            Call::ForceReleased { token: 5 },
            Outcome::Unknown,
            11,
            None,
        ),
        op(
            A,
            Call::Release { token: 5 },
            Outcome::Released,
            12,
            Some(13),
        ),
        op(A, Call::Acquire, granted(9), 20, Some(21)),
        op(B, Call::Acquire, granted(12), 30, Some(31)),
    ];
    assert!(is_violation(&check_lock_history(&later, BUDGET)));
}

// ----- semaphores and read/write locks ---------------------------------

const C: ClientId = 3;
const PERMIT: Call = Call::AcquireShared { write: false };
const READ: Call = Call::AcquireShared { write: false };
const WRITE: Call = Call::AcquireShared { write: true };

fn semaphore(permits: u32, h: &[Operation]) -> Verdict {
    check_history(h, SharedModel::new(Some(permits)), BUDGET)
}

fn read_write(h: &[Operation]) -> Verdict {
    check_history(h, SharedModel::new(None), BUDGET)
}

#[test]
fn a_semaphore_of_two_holds_two_and_not_three() {
    let two = [
        op(A, PERMIT, granted(1), 0, Some(5)),
        op(B, PERMIT, granted(2), 1, Some(6)),
        op(C, PERMIT, Outcome::Busy, 7, Some(8)),
        op(
            A,
            Call::Release { token: 1 },
            Outcome::Released,
            9,
            Some(10),
        ),
        op(C, PERMIT, granted(3), 11, Some(12)),
    ];
    assert_eq!(semaphore(2, &two), Verdict::Linearizable);
    let three = [
        op(A, PERMIT, granted(1), 0, Some(5)),
        op(B, PERMIT, granted(2), 1, Some(6)),
        op(C, PERMIT, granted(3), 7, Some(8)),
    ];
    assert!(is_violation(&semaphore(2, &three)));
    // A busy answer while a permit is surely free (nothing delays it).
    let busy_when_free = [
        op(A, PERMIT, granted(1), 0, Some(5)),
        op(B, PERMIT, Outcome::Busy, 6, Some(7)),
    ];
    assert!(is_violation(&semaphore(2, &busy_when_free)));
}

#[test]
fn readers_hold_together_and_a_writer_alone() {
    let readers = [
        op(A, READ, granted(1), 0, Some(5)),
        op(B, READ, granted(2), 1, Some(6)),
        op(C, WRITE, Outcome::Busy, 7, Some(8)),
        op(
            A,
            Call::Release { token: 1 },
            Outcome::Released,
            9,
            Some(10),
        ),
        op(
            B,
            Call::Release { token: 2 },
            Outcome::Released,
            9,
            Some(10),
        ),
        op(C, WRITE, granted(3), 11, Some(12)),
    ];
    assert_eq!(read_write(&readers), Verdict::Linearizable);
    let reader_beside_writer = [
        op(A, WRITE, granted(1), 0, Some(5)),
        op(B, READ, granted(2), 6, Some(7)),
    ];
    assert!(is_violation(&read_write(&reader_beside_writer)));
    let two_writers = [
        op(A, WRITE, granted(1), 0, Some(5)),
        op(B, WRITE, granted(2), 6, Some(7)),
    ];
    assert!(is_violation(&read_write(&two_writers)));
}

#[test]
fn shared_grants_draw_increasing_tokens_and_an_expiry_may_leave_a_delay() {
    let reused = [
        op(A, READ, granted(4), 0, Some(5)),
        op(B, READ, granted(4), 6, Some(7)),
    ];
    assert!(
        is_violation(&read_write(&reused)),
        "each grant its own token"
    );
    let delayed = [
        op(A, READ, granted(1), 0, Some(5)),
        op(
            A,
            Call::EndSession { expired: true },
            Outcome::Ended,
            6,
            Some(6),
        ),
        op(B, WRITE, Outcome::Busy, 7, Some(8)),
        op(B, WRITE, granted(2), 9, Some(10)),
    ];
    assert_eq!(read_write(&delayed), Verdict::Linearizable);
    let closed = [
        op(A, READ, granted(1), 0, Some(5)),
        op(
            A,
            Call::EndSession { expired: false },
            Outcome::Ended,
            6,
            Some(6),
        ),
        op(B, WRITE, Outcome::Busy, 7, Some(8)),
    ];
    assert!(
        is_violation(&read_write(&closed)),
        "nothing delays a closed reader's lock"
    );
}

#[test]
fn check_all_of_checks_each_history_against_its_kind() {
    let three_permits = vec![
        op(A, PERMIT, granted(1), 0, Some(5)),
        op(B, PERMIT, granted(2), 1, Some(6)),
    ];
    let histories: BTreeMap<String, Vec<Operation>> =
        [("sem".to_string(), three_permits)].into_iter().collect();
    assert!(check_all_of(&histories, |_| HistoryOf::Semaphore(2), BUDGET).is_ok());
    assert!(check_all_of(&histories, |_| HistoryOf::Semaphore(1), BUDGET).is_err());
}
