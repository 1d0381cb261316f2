//! Election watch streams: history first, then live events, never a
//! silent gap. (Lock watches: [`super::lock_watch`].)

use paxlock::proto::{self, watch_event::Kind, WatchEvent};
use tokio::sync::broadcast;

use crate::transport::watch_queue::WatchSender;

use super::access;
use super::state::Shared;
use crate::locks::{ElectionChange, ElectionEvent, Identity};
use paxlock_core::access::Permission;

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
/// goes away, or until the access rules no longer let `caller` read it
/// (the stream then ends with a `PERMISSION_DENIED` event).
pub async fn stream(
    shared: &Shared,
    caller: &Identity,
    election: String,
    start: Start,
    out: WatchSender<WatchEvent>,
) {
    // Subscribe before reading history so nothing falls between the two.
    let live = shared.subscribe(&election);
    let watcher = Watcher {
        shared,
        caller,
        election: &election,
        out: &out,
    };
    follow(&watcher, start, live).await;
    // The last watch of an election takes its broadcast channel with it, so
    // the map holds only elections someone watches.
    shared
        .watchers
        .remove_if(&election, |_, tx| tx.receiver_count() == 0);
}

/// One watch: whose, of what, and where its events go.
struct Watcher<'a> {
    shared: &'a Shared,
    caller: &'a Identity,
    election: &'a str,
    out: &'a WatchSender<WatchEvent>,
}

impl Watcher<'_> {
    /// Whether the watcher may still read the election; if not, it is told
    /// so (the stream's last event).
    async fn still_allowed(&self) -> bool {
        match may_still_read(self.shared, self.caller, self.election) {
            Ok(()) => true,
            Err(error) => {
                let _ = self
                    .out
                    .send(WatchEvent {
                        election: self.election.to_string(),
                        error: Some(error),
                        ..Default::default()
                    })
                    .await;
                false
            }
        }
    }
}

/// Whether the access rules applied now still let `caller` read `name`
/// (a watch checks before each event it sends); if not, the error that
/// ends its stream.
pub fn may_still_read(shared: &Shared, caller: &Identity, name: &str) -> Result<(), proto::Error> {
    shared
        .check_access(caller, Permission::Read, name)
        .map_err(|refused| access::denied(shared, &refused))
}

async fn follow(watcher: &Watcher<'_>, start: Start, mut live: broadcast::Receiver<ElectionEvent>) {
    let Watcher {
        shared,
        election,
        out,
        ..
    } = *watcher;
    let mut last = match start {
        Start::After(after) => after,
        Start::Now | Start::FromFirst => 0,
    };
    if start == Start::Now {
        let current = current_state(shared, election);
        last = current.index;
        if out.send(current).await.is_err() {
            return;
        }
    } else if !catch_up(shared, election, &mut last, out).await {
        return;
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            // The watcher left: end now, not at the election's next event,
            // which may never come.
            () = out.closed() => return,
        };
        // A rule change applied since the watch began counts for what it
        // shows next.
        if !watcher.still_allowed().await {
            return;
        }
        match received {
            Ok(event) if event.index <= last => {}
            Ok(event) if Some(event.index) == last.checked_add(1) => {
                last = event.index;
                if out.send(to_proto(&event)).await.is_err() {
                    return;
                }
            }
            // A gap (missed broadcast) or lag: fill it from the machine.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(shared, election, &mut last, out).await {
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
    out: &WatchSender<WatchEvent>,
) -> bool {
    let history = shared
        .machine()
        .election_events_since(election, last.saturating_add(1));
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
    // The latest event's index even when older ones were trimmed, so a
    // watch resumed from here neither repeats nor skips one.
    let index = machine.election_last_index(election);
    match machine.leader(election) {
        Some(view) => WatchEvent {
            kind: Kind::Elected.into(),
            election: election.to_string(),
            term: view.term,
            value: view.value,
            leader_session_id: view.session.0,
            index,
            error: None,
            leader_identity: view.owner.map(|o| o.0).unwrap_or_default(),
            fencing_token: view.token.map_or(0, |t| t.0),
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
    let (kind, value, session, owner, token) = match &event.change {
        ElectionChange::NewLeader {
            session,
            value,
            owner,
            token,
        } => (Kind::Elected, value.clone(), session.0, owner, *token),
        ElectionChange::Proclaimed {
            session,
            value,
            owner,
            token,
        } => (Kind::ValueChanged, value.clone(), session.0, owner, *token),
        ElectionChange::NoLeader => (Kind::NoLeader, Vec::new(), 0, &None, None),
    };
    WatchEvent {
        kind: kind.into(),
        election: event.name.clone(),
        term: event.term,
        value,
        leader_session_id: session,
        index: event.index,
        error: None,
        leader_identity: owner.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
        fencing_token: token.map_or(0, |t| t.0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::locks::{ClientOp, Command, CommandKind, Config, Event, Reply};
    use crate::transport::watch_queue::WatchReceiver;

    /// Applies `kind` at `slot` and broadcasts its election events, as the
    /// apply loop does.
    fn apply(shared: &Shared, slot: u64, kind: CommandKind) -> Option<Reply> {
        let output = shared.machine().apply(slot, Command { at_ms: 0, kind });
        for event in &output.events {
            if let Event::Election(e) = event {
                if let Some(tx) = shared.watchers.get(&e.name) {
                    let _ = tx.send(e.clone());
                }
            }
        }
        output.reply.ok()
    }

    /// Identity `w`'s watch of election `e` from now: its task and events.
    fn watch_now(
        shared: &std::sync::Arc<Shared>,
    ) -> (tokio::task::JoinHandle<()>, WatchReceiver<WatchEvent>) {
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1 << 24));
        let (tx, rx) = crate::transport::watch_queue::watch_queue(budget);
        let shared = shared.clone();
        let watcher = Identity("w".into());
        let task =
            tokio::spawn(
                async move { stream(&shared, &watcher, "e".into(), Start::Now, tx).await },
            );
        (task, rx)
    }

    fn client(session: u64, request_id: u64, op: ClientOp) -> CommandKind {
        CommandKind::client_op(session, request_id, op)
    }

    fn campaign(session: u64, request_id: u64) -> CommandKind {
        let op = ClientOp::Campaign {
            name: "e".into(),
            value: vec![session as u8],
        };
        client(session, request_id, op)
    }

    /// Regression (found in review): once an election's history was
    /// trimmed, a watch from "now" described the current state with index
    /// 0, so every later event looked like a gap (`HISTORY_GONE` again and
    /// again) and a client resuming from index 0 skipped terms.
    #[tokio::test]
    async fn a_watch_from_now_carries_the_latest_index_after_history_is_trimmed() {
        let config = Config {
            election_history_len: 2,
            ..Config::default()
        };
        let shared = Shared::new(1, config);
        let open = |slot| match apply(&shared, slot, CommandKind::OpenSession { ttl_ms: 10_000 }) {
            Some(Reply::SessionOpened { session }) => session.0,
            other => panic!("{other:?}"),
        };
        let (a, b) = (open(0), open(1));
        let resign = |session| client(session, 2, ClientOp::Resign { name: "e".into() });
        apply(&shared, 2, campaign(a, 1)); // event 1: a elected
        apply(&shared, 3, resign(a)); // event 2: no leader
        apply(&shared, 4, campaign(b, 1)); // event 3: b elected
        assert!(shared.machine().election_events_since("e", 1).is_err());
        let shared = std::sync::Arc::new(shared);
        let (task, mut rx) = watch_now(&shared);
        let within = Duration::from_secs(5);
        let first = tokio::time::timeout(within, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .frame;
        let term = shared.machine().term("e");
        assert_eq!(
            (first.kind(), first.term, first.index),
            (Kind::Elected, term, 3)
        );
        apply(&shared, 5, resign(b)); // event 4: no leader
        let second = tokio::time::timeout(within, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .frame;
        assert_eq!((second.kind(), second.index), (Kind::NoLeader, 4));
        // The watcher leaves while the election is quiet: the task ends and
        // takes the election's channel with it.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(!shared.watchers.contains_key("e"));
    }

    /// A rule change applied while a watch runs counts for its next event:
    /// the watcher who may no longer read the election is told so, and the
    /// stream ends.
    #[tokio::test]
    async fn a_watch_ends_with_permission_denied_once_the_rules_stop_allowing_it() {
        use paxlock_core::access::{AccessRule, AccessRules};
        let shared = std::sync::Arc::new(Shared::new(1, Config::default()));
        let open = |slot| match apply(&shared, slot, CommandKind::OpenSession { ttl_ms: 10_000 }) {
            Some(Reply::SessionOpened { session }) => session.0,
            other => panic!("{other:?}"),
        };
        let a = open(1);
        let (task, mut rx) = watch_now(&shared);
        let within = Duration::from_secs(5);
        let first = tokio::time::timeout(within, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .frame;
        assert_eq!(first.kind(), Kind::NoLeader);
        let only_others = AccessRules {
            quotas: Vec::new(),
            rules: vec![AccessRule {
                identities: vec!["someone-else".into()],
                permissions: [Permission::Read].into_iter().collect(),
                prefixes: vec![String::new()],
            }],
        };
        let set = CommandKind::SetAccessRules {
            by: Identity("ops".into()),
            rules: only_others,
            expected_version: None,
        };
        assert_eq!(apply(&shared, 2, set), Some(Reply::Done));
        apply(&shared, 3, campaign(a, 1));
        let last = tokio::time::timeout(within, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .frame;
        let code = last.error.as_ref().map(|e| e.code);
        assert_eq!(
            code,
            Some(paxlock::proto::ErrorCode::PermissionDenied.into()),
            "{last:?}"
        );
        let end = tokio::time::timeout(within, rx.recv()).await.unwrap();
        assert!(end.is_none(), "{:?}", end.map(|q| q.frame));
        tokio::time::timeout(within, task).await.unwrap().unwrap();
    }
}
