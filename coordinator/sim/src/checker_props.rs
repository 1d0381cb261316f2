//! The lock state machine against the linearizability checker's model:
//! histories the machine produces are linearizable for the checker, and
//! widening them (concurrency, lost outcomes) never gives a false alarm.

use proptest::prelude::*;

use paxlock_core::locks::harness::Harness;
use paxlock_core::locks::{ClientOp, Config, FencingToken, Reply, SessionId, StateMachine};

use super::linearizability::{self, Call, Operation, Outcome, Verdict};

fn config(lock_delay_ms: u64) -> Config {
    let mut c = Harness::small().sm.config().clone();
    c.lock_delay_ms = lock_delay_ms;
    c
}

/// `s`'s token for `lock` if it holds it and `current`; else a stale one.
fn token(sm: &StateMachine, s: SessionId, lock: &str, current: bool) -> FencingToken {
    match sm.holder(lock) {
        Some(h) if current && h.session == s => h.token,
        _ => FencingToken(sm.revision() / 2),
    }
}

/// Drives the machine sequentially on one lock with try-acquire, release,
/// check and session end, and records each operation as completing at its
/// linearization point `10·t` (so `invoked_at == completed_at - 1`).
fn single_lock_history(steps: &[(u8, u8, bool)], delay: u64) -> Vec<Operation> {
    let mut h = Harness::new(config(delay));
    let mut sessions: Vec<SessionId> = (0..3).map(|_| h.open()).collect();
    let mut ops = Vec::new();
    for (t, &(kind, who, flag)) in steps.iter().enumerate() {
        let c = usize::from(who) % sessions.len();
        let s = sessions[c];
        let time = t as u64 * 10 + 10;
        h.at_ms = time;
        let (call, outcome) = match kind {
            0 => {
                let outcome = match h.acquire(s, "x", false).reply {
                    Ok(Reply::Granted { token }) => Outcome::Granted { token: token.0 },
                    Ok(Reply::Busy { .. }) => Outcome::Busy,
                    other => panic!("unexpected {other:?}"),
                };
                (Call::Acquire, outcome)
            }
            1 | 2 => {
                let token = token(&h.sm, s, "x", flag);
                let name = "x".to_owned();
                let (op, call) = if kind == 1 {
                    (
                        ClientOp::Release { name, token },
                        Call::Release { token: token.0 },
                    )
                } else {
                    (
                        ClientOp::Check { name, token },
                        Call::Check { token: token.0 },
                    )
                };
                let outcome = match h.op(s, op).reply {
                    Ok(Reply::Released) => Outcome::Released,
                    Ok(Reply::Valid) => Outcome::Valid,
                    Err(_) => Outcome::Stale,
                    other => panic!("unexpected {other:?}"),
                };
                (call, outcome)
            }
            _ => {
                // End the session (expire or close); a fresh session
                // (a new client) takes its place.
                if flag {
                    h.expire(s);
                } else {
                    h.op(s, ClientOp::CloseSession);
                }
                sessions[c] = h.open();
                (Call::EndSession { expired: flag }, Outcome::Ended)
            }
        };
        ops.push(Operation {
            client: s.0,
            call,
            outcome,
            invoked_at: time - 1,
            completed_at: Some(time),
        });
    }
    ops
}

proptest! {
    /// The state machine, driven sequentially on one lock, produces
    /// histories the checker's sequential model accepts.
    #[test]
    fn machine_histories_are_linearizable_for_the_checker(
        steps in prop::collection::vec((0u8..4, 0u8..3, any::<bool>()), 1..60),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let ops = single_lock_history(&steps, delay);
        prop_assert_eq!(
            linearizability::check_lock_history(&ops, 1_000_000),
            Verdict::Linearizable
        );
    }

    /// Widening every interval around its true linearization point, and
    /// forgetting some outcomes, must never produce a false alarm.
    #[test]
    fn concurrent_and_unknown_outcomes_never_give_false_alarms(
        steps in prop::collection::vec((0u8..4, 0u8..3, any::<bool>()), 1..40),
        jitter in prop::collection::vec((0u64..25, 0u64..25, 0u8..8), 40),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut ops = single_lock_history(&steps, delay);
        for (op, &(before, after, lose)) in ops.iter_mut().zip(&jitter) {
            let point = op.completed_at.unwrap_or(op.invoked_at);
            op.invoked_at = point - 1 - before.min(point - 1);
            if lose == 0 {
                op.completed_at = None;
                op.outcome = Outcome::Unknown;
            } else {
                op.completed_at = Some(point + after);
            }
        }
        let verdict = linearizability::check_lock_history(&ops, 2_000_000);
        prop_assert!(
            matches!(verdict, Verdict::Linearizable),
            "false alarm: {:?} on {:?}", verdict, ops
        );
    }
}
