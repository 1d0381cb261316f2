//! The end-of-run checks over the recorded history. Each returns a
//! [`Check`] saying what was checked, on how much, and what broke.

use std::collections::BTreeMap;
use std::time::Duration;

use paxlock::{LeaderEvent, LockEvent};

use super::history::{event_term, History};
use super::workers::history_of;
use paxlock_sim::linearizability::{check_history_of, Outcome, Verdict};

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// What it asserts.
    pub name: &'static str,
    /// Pass, fail, or could not decide.
    pub status: Status,
    /// Figures or the first violation.
    pub detail: String,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The property held.
    Pass,
    /// The property was violated.
    Fail,
    /// The checker ran out of budget; neither proven nor refuted.
    Inconclusive,
}

impl Check {
    /// A passing or failing check: passes when `violation` is `None`.
    pub fn from(name: &'static str, violation: Option<String>, figures: String) -> Check {
        match violation {
            None => Check {
                name,
                status: Status::Pass,
                detail: figures,
            },
            Some(v) => Check {
                name,
                status: Status::Fail,
                detail: v,
            },
        }
    }
}

/// Mutual exclusion as the fenced resources saw it: a write made while the
/// writer's lease held (no freeze since its check) is never refused, and
/// accepted tokens never decrease; each token belongs to one session, and
/// one holder's writes are never interleaved with another's.
pub fn fenced_resources(history: &History) -> Vec<Check> {
    let mut refused_live = None;
    let mut decreasing = None;
    let mut shared_token = None;
    let mut interleaved = None;
    let (mut writes, mut refused_after_pause) = (0usize, 0usize);
    for (name, log) in &history.resources {
        let mut owner: BTreeMap<u64, u64> = BTreeMap::new();
        let mut highest = 0;
        let mut finished_tokens = std::collections::BTreeSet::new();
        let mut current: Option<u64> = None;
        for (i, w) in log.writes.iter().enumerate() {
            writes += 1;
            if !w.accepted {
                if w.paused_since_check {
                    refused_after_pause += 1;
                } else if refused_live.is_none() {
                    refused_live = Some(format!(
                        "{name}: write #{i} by worker {} (session {}, token {}) refused while its lease held: another holder had written a higher token",
                        w.worker, w.session, w.token
                    ));
                }
                continue;
            }
            if w.token < highest && decreasing.is_none() {
                decreasing = Some(format!(
                    "{name}: accepted token {} after {highest}",
                    w.token
                ));
            }
            highest = highest.max(w.token);
            if w.shared {
                // Readers holding together write with one token.
                continue;
            }
            if let Some(&other) = owner.get(&w.token) {
                if other != w.session && shared_token.is_none() {
                    shared_token = Some(format!(
                        "{name}: token {} used by sessions {other} and {}",
                        w.token, w.session
                    ));
                }
            }
            owner.insert(w.token, w.session);
            if current != Some(w.token) {
                if let Some(prev) = current {
                    finished_tokens.insert(prev);
                }
                if finished_tokens.contains(&w.token) && interleaved.is_none() {
                    interleaved = Some(format!(
                        "{name}: holder with token {} wrote again after another holder",
                        w.token
                    ));
                }
                current = Some(w.token);
            }
        }
    }
    let figures = format!(
        "{writes} writes on {} resources; {refused_after_pause} stale writes after a pause refused by fencing",
        history.resources.len()
    );
    vec![
        Check::from(
            "mutual exclusion (no write under a held lease refused)",
            refused_live,
            figures,
        ),
        Check::from(
            "fencing tokens never decrease at the resources",
            decreasing,
            format!("{writes} writes"),
        ),
        Check::from(
            "one session per token, holders' writes not interleaved",
            shared_token.or(interleaved),
            format!("{writes} writes"),
        ),
    ]
}

/// Every lock's history is linearizable against the lock model (the
/// semaphore's and the read/write lock's against theirs).
pub fn linearizable(history: &History, max_steps: u64) -> Check {
    let name = "lock histories linearizable";
    let ops: usize = history.lock_ops.values().map(Vec::len).sum();
    let mut inconclusive = Vec::new();
    for (lock, history) in &history.lock_ops {
        let verdict = check_history_of(history, history_of(lock), max_steps);
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown { steps } => {
                inconclusive.push(format!("{lock} (budget of {steps} steps spent)"))
            }
            Verdict::NotLinearizable { longest_prefix } => {
                let tail: Vec<String> = longest_prefix
                    .iter()
                    .rev()
                    .take(6)
                    .rev()
                    .filter_map(|&i| history.get(i))
                    .map(|o| format!("{o:?}"))
                    .collect();
                return Check::from(
                    name,
                    Some(format!(
                        "{lock}: no linearization; longest prefix {} ops, ending with:\n      {}",
                        longest_prefix.len(),
                        tail.join("\n      ")
                    )),
                    String::new(),
                );
            }
            Verdict::InvalidHistory { index, why } => {
                return Check::from(
                    name,
                    Some(format!(
                        "{lock}: recorded history invalid at op {index}: {why}"
                    )),
                    String::new(),
                );
            }
        }
    }
    if inconclusive.is_empty() {
        Check::from(
            name,
            None,
            format!("{ops} operations on {} locks", history.lock_ops.len()),
        )
    } else {
        Check {
            name,
            status: Status::Inconclusive,
            detail: format!("undecided: {}", inconclusive.join(", ")),
        }
    }
}

/// No token was granted to two different sessions (a session may be told
/// its token again by an idempotent re-acquire).
pub fn grants(history: &History) -> Check {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut violation = None;
    let mut count = 0;
    for (lock, ops) in &history.lock_ops {
        for o in ops {
            if let Outcome::Granted { token } = o.outcome {
                count += 1;
                if let Some(&other) = seen.get(&token) {
                    if other != o.client && violation.is_none() {
                        violation = Some(format!(
                            "{lock}: token {token} granted to sessions {other} and {}",
                            o.client
                        ));
                    }
                }
                seen.insert(token, o.client);
            }
        }
    }
    Check::from(
        "every grant's token unique",
        violation,
        format!("{count} grants"),
    )
}

/// The leadership history (the cluster's replay) has gap-free terms; every
/// won campaign is in it; every watcher saw exactly that history, in
/// order, up to the final term.
pub fn elections(history: &History, replay: &[LeaderEvent]) -> Vec<Check> {
    let mut gap = None;
    let mut last = 0u64;
    for event in replay {
        match event {
            LeaderEvent::Elected { term, .. } | LeaderEvent::NoLeader { term } => {
                if *term != last + 1 && gap.is_none() {
                    gap = Some(format!("term {term} follows term {last}"));
                }
                last = *term;
            }
            LeaderEvent::ValueChanged { term, .. } => {
                if *term != last && gap.is_none() {
                    gap = Some(format!("value change in term {term} during term {last}"));
                }
            }
            LeaderEvent::HistoryGone => {
                if gap.is_none() {
                    gap = Some("the replay from the start was cut (HistoryGone)".into());
                }
            }
        }
    }
    let mut missing = None;
    let mut terms_won = BTreeMap::new();
    for won in &history.campaigns {
        let found = replay.iter().any(|e| {
            matches!(e, LeaderEvent::Elected { term, value, .. } if *term == won.term && *value == won.value)
        });
        if !found && missing.is_none() {
            missing = Some(format!(
                "session {} was told it won term {} but the history does not say so",
                won.session, won.term
            ));
        }
        if let Some(other) = terms_won.insert(won.term, won.session) {
            if missing.is_none() {
                missing = Some(format!(
                    "term {} won by sessions {other} and {}",
                    won.term, won.session
                ));
            }
        }
    }
    let mut watcher_problem = None;
    for (watcher, seen) in &history.watched {
        if seen != replay && watcher_problem.is_none() {
            let first_diff = seen
                .iter()
                .zip(replay)
                .position(|(a, b)| a != b)
                .unwrap_or(seen.len().min(replay.len()));
            watcher_problem = Some(format!(
                "watcher {watcher} saw {} events, the cluster has {}; first difference at event {first_diff}: saw {:?}, history has {:?}",
                seen.len(),
                replay.len(),
                seen.get(first_diff),
                replay.get(first_diff)
            ));
        }
    }
    let final_term = replay.iter().rev().find_map(event_term).unwrap_or(0);
    vec![
        Check::from(
            "election terms gap-free, every won campaign in the history",
            gap.or(missing),
            format!(
                "{} events, final term {final_term}, {} campaigns won",
                replay.len(),
                history.campaigns.len()
            ),
        ),
        Check::from(
            "watchers saw every term, in order",
            watcher_problem,
            format!(
                "{} watchers x {} events",
                history.watched.len(),
                replay.len()
            ),
        ),
    ]
}

/// Every membership fault drawn that could be made completed (spares
/// added and promoted, members removed) while the other faults went on.
pub fn membership(outcomes: &[super::membership::Outcome]) -> Check {
    use super::membership::Outcome;
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Done(_)))
        .count();
    let failed = outcomes.iter().find_map(|o| match o {
        Outcome::Failed(why) => Some(why.clone()),
        _ => None,
    });
    Check::from(
        "membership changes complete",
        failed,
        format!("{done} replacements, growths and shrinks made"),
    )
}

/// Every worker's final acquire succeeded within the bound.
pub fn liveness(
    results: &BTreeMap<usize, Result<Duration, String>>,
    workers: usize,
    bound: Duration,
) -> Check {
    let mut violation = None;
    let mut slowest = Duration::ZERO;
    for index in 0..workers {
        match results.get(&index) {
            Some(Ok(took)) if *took <= bound => slowest = slowest.max(*took),
            Some(Ok(took)) => {
                violation.get_or_insert(format!("worker {index} took {took:?} (bound {bound:?})"));
            }
            Some(Err(e)) => {
                violation.get_or_insert(format!("worker {index}: {e}"));
            }
            None => {
                violation.get_or_insert(format!("worker {index} never finished"));
            }
        }
    }
    Check::from(
        "liveness: every worker acquires after healing",
        violation,
        format!("{workers} workers, slowest {slowest:.1?} (bound {bound:?})"),
    )
}

/// A lock as the runner's watch rebuilds it from its events.
#[derive(Debug, Default)]
struct WatchedLock {
    holder: Option<(u64, u64)>,
    queue: std::collections::VecDeque<u64>,
    delayed: bool,
}

impl WatchedLock {
    /// Applies one change; `Err` names a change the state before does not
    /// allow (a change was missed or made up).
    fn change(&mut self, event: &LockEvent) -> Result<(), String> {
        match event {
            LockEvent::Granted {
                holder,
                fencing_token,
                ..
            } => {
                let session = holder.session_id;
                if self.holder.is_some() || self.delayed {
                    return Err(format!(
                        "granted to session {session} while held ({:?}) or in lock-delay ({})",
                        self.holder, self.delayed
                    ));
                }
                match self.queue.front() {
                    Some(&first) if first == session => {
                        self.queue.pop_front();
                    }
                    None => {}
                    Some(&first) => {
                        return Err(format!(
                            "granted to session {session} ahead of session {first} at the front of the queue"
                        ))
                    }
                }
                self.holder = Some((session, *fencing_token));
            }
            LockEvent::Released {
                holder,
                fencing_token,
                lock_delay,
                ..
            } => {
                if self.holder != Some((holder.session_id, *fencing_token)) {
                    return Err(format!(
                        "released session {}'s token {fencing_token} while the grant was {:?}",
                        holder.session_id, self.holder
                    ));
                }
                self.holder = None;
                self.delayed = lock_delay.is_some();
            }
            LockEvent::Queued { session, .. } => self.queue.push_back(session.session_id),
            LockEvent::LeftQueue { session, .. } => {
                let at = self.queue.iter().position(|s| *s == session.session_id);
                let at = at.ok_or_else(|| {
                    format!("session {} left a queue it was not in", session.session_id)
                })?;
                self.queue.remove(at);
            }
            LockEvent::DelayEnded { .. } => {
                if !self.delayed {
                    return Err("a lock-delay ended that had not begun".into());
                }
                self.delayed = false;
            }
            LockEvent::Current { .. } | LockEvent::HistoryGone => {}
        }
        Ok(())
    }
}

/// The runner's lock watches, through every fault: each event follows from
/// the state before it (rebuilt from the first `Current`), indices never go
/// back, tokens granted rise, and every grant a worker was told of is among
/// the watch's grants unless it fell in a gap the watch was told of
/// (between the last index before a `HistoryGone` and the `Current` after
/// it, as after a node restart cost it history).
pub fn lock_watches(history: &History) -> Check {
    let mut violation = None;
    let (mut events, mut all_gaps, mut missed_in_gaps, mut taken) = (0, 0, 0, 0);
    for (lock, watched) in &history.lock_watched {
        let mut gaps = 0;
        // (last index before a `HistoryGone`, index of the `Current` after
        // it): the changes the watch was told it may have missed.
        let mut gap_spans: Vec<(u64, u64)> = Vec::new();
        let mut open_gap: Option<u64> = None;
        let mut state: Option<WatchedLock> = None;
        let mut last_index = 0;
        let mut last_token = 0;
        let mut granted = std::collections::BTreeSet::new();
        for event in watched {
            events += 1;
            if let Some(index) = event.index() {
                if index < last_index && violation.is_none() {
                    violation = Some(format!("{lock}: index {index} after {last_index}"));
                }
                last_index = last_index.max(index);
            }
            match event {
                LockEvent::HistoryGone => {
                    gaps += 1;
                    state = None;
                    open_gap = Some(last_index);
                }
                LockEvent::Current { lock: info, index } => {
                    if let Some(from) = open_gap.take() {
                        gap_spans.push((from, *index));
                    }
                    state = Some(WatchedLock {
                        holder: info
                            .grant
                            .as_ref()
                            .map(|g| (g.holder.session_id, g.fencing_token)),
                        queue: info.waiters.iter().map(|w| w.session.session_id).collect(),
                        delayed: info.lock_delay_left.is_some(),
                    });
                }
                change => {
                    if let LockEvent::Granted {
                        holder,
                        fencing_token,
                        ..
                    } = change
                    {
                        if *fencing_token <= last_token && violation.is_none() {
                            violation = Some(format!(
                                "{lock}: token {fencing_token} granted after {last_token}"
                            ));
                        }
                        last_token = last_token.max(*fencing_token);
                        granted.insert((holder.session_id, *fencing_token));
                    }
                    if let LockEvent::Released {
                        reason: paxlock::EndReason::ForceReleased,
                        ..
                    } = change
                    {
                        taken += 1;
                    }
                    let Some(s) = state.as_mut() else {
                        if violation.is_none() {
                            violation =
                                Some(format!("{lock}: a change before any state: {change:?}"));
                        }
                        continue;
                    };
                    if let Err(e) = s.change(change) {
                        violation.get_or_insert(format!("{lock}: {e}"));
                    }
                }
            }
        }
        all_gaps += gaps;
        for op in history.lock_ops.get(lock).into_iter().flatten() {
            let Outcome::Granted { token } = op.outcome else {
                continue;
            };
            if granted.contains(&(op.client, token)) {
                continue;
            }
            // A grant's token is at most the index of its command, above
            // the index read before it: inside a span iff its token is.
            let in_gap = gap_spans
                .iter()
                .any(|&(from, to)| from < token && token <= to)
                || open_gap.is_some_and(|from| from < token);
            if in_gap {
                missed_in_gaps += 1;
            } else if violation.is_none() {
                violation = Some(format!(
                    "{lock}: session {} was granted token {token}, which its watch never showed",
                    op.client
                ));
            }
        }
    }
    Check::from(
        "lock watches show every change in order",
        violation,
        format!(
            "{events} events on {} locks; {all_gaps} history gaps announced ({missed_in_gaps} grants fell in them); {taken} force-releases seen",
            history.lock_watched.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{CampaignWon, Recorder, Write};

    fn write(worker: usize, session: u64, token: u64, paused: bool) -> Write {
        Write {
            worker,
            session,
            token,
            paused_since_check: paused,
            accepted: false,
            shared: false,
        }
    }

    #[test]
    fn a_refused_write_under_a_held_lease_fails_mutual_exclusion() {
        let rec = Recorder::new();
        rec.write("a", write(0, 1, 5, false));
        rec.write("a", write(1, 2, 9, false));
        rec.write("a", write(0, 1, 5, true));
        let checks = fenced_resources(&rec.take());
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );

        let rec = Recorder::new();
        rec.write("a", write(1, 2, 9, false));
        rec.write("a", write(0, 1, 5, false));
        let checks = fenced_resources(&rec.take());
        assert_eq!(checks[0].status, Status::Fail, "{checks:?}");
    }

    #[test]
    fn a_token_shared_by_two_sessions_fails() {
        let rec = Recorder::new();
        rec.write("a", write(0, 1, 5, false));
        rec.write("a", write(1, 2, 5, false));
        let checks = fenced_resources(&rec.take());
        assert_eq!(checks[2].status, Status::Fail, "{checks:?}");
    }

    #[test]
    fn watcher_missing_a_term_fails_and_gaps_fail() {
        let elected = |term, v: &str| LeaderEvent::Elected {
            term,
            value: v.as_bytes().to_vec(),
            identity: "chaos".into(),
            fencing_token: Some(term),
        };
        let replay = vec![
            elected(1, "a"),
            LeaderEvent::NoLeader { term: 2 },
            elected(3, "b"),
        ];
        let rec = Recorder::new();
        rec.watched(0, replay[0].clone());
        rec.watched(0, replay[2].clone());
        rec.campaign(CampaignWon {
            session: 1,
            term: 3,
            value: b"b".to_vec(),
        });
        let checks = elections(&rec.take(), &replay);
        assert_eq!(checks[0].status, Status::Pass, "{checks:?}");
        assert_eq!(checks[1].status, Status::Fail, "{checks:?}");

        let gappy = vec![elected(1, "a"), elected(3, "b")];
        let checks = elections(&History::default(), &gappy);
        assert_eq!(checks[0].status, Status::Fail, "{checks:?}");
    }

    #[test]
    fn a_campaign_the_history_lacks_fails() {
        let replay = vec![LeaderEvent::Elected {
            term: 1,
            value: b"a".to_vec(),
            identity: "chaos".into(),
            fencing_token: Some(1),
        }];
        let rec = Recorder::new();
        rec.campaign(CampaignWon {
            session: 4,
            term: 1,
            value: b"other".to_vec(),
        });
        assert_eq!(elections(&rec.take(), &replay)[0].status, Status::Fail);
    }

    fn session(session_id: u64) -> paxlock::SessionRef {
        paxlock::SessionRef {
            session_id,
            identity: "chaos".into(),
        }
    }

    fn free_lock(index: u64) -> LockEvent {
        let lock = paxlock::LockInfo {
            name: "a".into(),
            kind: paxlock::LockKind::Lock,
            grant: None,
            holders: Vec::new(),
            value: Vec::new(),
            waiters: Vec::new(),
            lock_delay_left: None,
        };
        LockEvent::Current { index, lock }
    }

    fn granted(index: u64, to: u64) -> LockEvent {
        LockEvent::Granted {
            index,
            holder: session(to),
            fencing_token: index,
            value: Vec::new(),
        }
    }

    fn released(index: u64, from: u64, token: u64) -> LockEvent {
        LockEvent::Released {
            index,
            holder: session(from),
            fencing_token: token,
            reason: paxlock::EndReason::Released,
            lock_delay: None,
        }
    }

    /// Records `events` as lock `a`'s watch and `grants` (session, token)
    /// as the workers' grants; returns the lock-watch check.
    fn lock_watch_check(events: &[LockEvent], grants: &[(u64, u64)]) -> Check {
        let rec = Recorder::new();
        for event in events {
            rec.lock_watched("a", event.clone());
        }
        for &(client, token) in grants {
            let granted = Outcome::Granted { token };
            rec.op(
                "a",
                client,
                paxlock_sim::linearizability::Call::Acquire,
                granted,
                0,
                Some(1),
            );
        }
        lock_watches(&rec.take())
    }

    #[test]
    fn a_lock_watch_that_skips_a_change_or_a_grant_fails() {
        let whole = [
            free_lock(1),
            granted(2, 7),
            released(3, 7, 2),
            granted(5, 8),
        ];
        let check = lock_watch_check(&whole, &[(7, 2), (8, 5)]);
        assert_eq!(check.status, Status::Pass, "{check:?}");
        // The release was missed: the next grant finds the lock held.
        let skipped = [free_lock(1), granted(2, 7), granted(5, 8)];
        let check = lock_watch_check(&skipped, &[(7, 2), (8, 5)]);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        // A grant a worker was told of never shown.
        let check = lock_watch_check(&whole[..3], &[(7, 2), (8, 5)]);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        // Unless the watch was told it had a gap.
        let gap = [
            free_lock(1),
            granted(2, 7),
            LockEvent::HistoryGone,
            free_lock(6),
        ];
        let check = lock_watch_check(&gap, &[(7, 2), (8, 5)]);
        assert_eq!(check.status, Status::Pass, "{check:?}");
        // But not a grant after the gap.
        let check = lock_watch_check(&gap, &[(7, 2), (8, 9)]);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        // Indices never go back.
        let back = [free_lock(4), granted(2, 7)];
        let check = lock_watch_check(&back, &[(7, 2)]);
        assert_eq!(check.status, Status::Fail, "{check:?}");
    }
}
