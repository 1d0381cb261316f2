//! Election watch streams: history first, then live events, never a
//! silent gap.

use paxlock::proto::{watch_event::Kind, WatchEvent};
use tokio::sync::{broadcast, mpsc};

use super::state::Shared;
use crate::locks::{ElectionChange, ElectionEvent};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// One event describing the current state, then changes.
    Now,
    /// Every event after this index (resuming a watch).
    After(u64),
    /// Every retained event from the first (`HistoryGone` if trimmed).
    FromFirst,
}

impl Start {
    /// The start a `Watch{after_index, from_start}` request asks for.
    pub fn from_request(after_index: u64, from_start: bool) -> Start {
        match (after_index, from_start) {
            (0, true) => Start::FromFirst,
            (0, false) => Start::Now,
            (after, _) => Start::After(after),
        }
    }
}

/// Streams `election`'s events from `start` into `out` until the receiver
/// goes away.
pub async fn stream(
    shared: &Shared,
    election: String,
    start: Start,
    out: mpsc::Sender<WatchEvent>,
) {
    // Subscribe before reading history so nothing falls between the two.
    let mut live = shared.subscribe(&election);
    let mut last = match start {
        Start::After(after) => after,
        Start::Now | Start::FromFirst => 0,
    };
    if start == Start::Now {
        let current = current_state(shared, &election);
        last = current.index;
        if out.send(current).await.is_err() {
            return;
        }
    } else if !catch_up(shared, &election, &mut last, &out).await {
        return;
    }
    loop {
        match live.recv().await {
            Ok(event) if event.index <= last => {}
            Ok(event) if event.index == last + 1 => {
                last = event.index;
                if out.send(to_proto(&event)).await.is_err() {
                    return;
                }
            }
            // A gap (missed broadcast) or lag: fill it from the machine.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(shared, &election, &mut last, &out).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends every retained event after `last`; if some are gone, says so and
/// sends the current state. Returns false when the receiver is gone.
async fn catch_up(
    shared: &Shared,
    election: &str,
    last: &mut u64,
    out: &mpsc::Sender<WatchEvent>,
) -> bool {
    let history = shared.machine().election_events_since(election, *last + 1);
    match history {
        Ok(events) => {
            for event in events {
                if event.index <= *last {
                    continue;
                }
                *last = event.index;
                if out.send(to_proto(&event)).await.is_err() {
                    return false;
                }
            }
            true
        }
        Err(_) => {
            let gone = WatchEvent {
                kind: Kind::HistoryGone.into(),
                election: election.to_string(),
                ..Default::default()
            };
            let current = current_state(shared, election);
            *last = current.index;
            out.send(gone).await.is_ok() && out.send(current).await.is_ok()
        }
    }
}

/// One event describing the election now, indexed like its latest event.
fn current_state(shared: &Shared, election: &str) -> WatchEvent {
    let machine = shared.machine();
    let index = machine
        .election_events_since(election, 0)
        .ok()
        .and_then(|events| events.last().map(|e| e.index))
        .unwrap_or(0);
    match machine.leader(election) {
        Some(view) => WatchEvent {
            kind: Kind::Elected.into(),
            election: election.to_string(),
            term: view.term,
            value: view.value,
            leader_session_id: view.session.0,
            index,
        },
        None => WatchEvent {
            kind: Kind::NoLeader.into(),
            election: election.to_string(),
            term: machine.term(election),
            index,
            ..Default::default()
        },
    }
}

/// The wire form of a machine event.
pub fn to_proto(event: &ElectionEvent) -> WatchEvent {
    let (kind, value, session) = match &event.change {
        ElectionChange::NewLeader { session, value } => (Kind::Elected, value.clone(), session.0),
        ElectionChange::Proclaimed { session, value } => {
            (Kind::ValueChanged, value.clone(), session.0)
        }
        ElectionChange::NoLeader => (Kind::NoLeader, Vec::new(), 0),
    };
    WatchEvent {
        kind: kind.into(),
        election: event.name.clone(),
        term: event.term,
        value,
        leader_session_id: session,
        index: event.index,
    }
}
