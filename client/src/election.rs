//! Leader election: campaign, proclaim, resign, and a watch of leadership.

use std::time::Instant;

use crate::client::{unexpected, Client};
use crate::clock::boottime;
use crate::error::Error;
use crate::proto::{self, request::Op, response, watch_event::Kind, WatchEvent};
use crate::undo::{settle, UndoOnDrop};
use crate::wire::read_frame;

/// A handle on one election.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
}

/// The current leader of an election, as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The term: increases by exactly one per change of leader.
    pub term: u64,
    /// The leader's published value.
    pub value: Vec<u8>,
    /// The leader's session id.
    pub session_id: u64,
    /// The identity (client certificate name) the leader's session belongs
    /// to; empty for a session opened before the cluster recorded owners.
    pub identity: String,
}

/// A change of leadership, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderEvent {
    /// A new leader with its value; `term` is one more than the last.
    Elected {
        /// The new term.
        term: u64,
        /// The leader's value.
        value: Vec<u8>,
        /// The identity the leader's session belongs to (as in
        /// [`LeaderInfo::identity`]).
        identity: String,
    },
    /// The leader proclaimed a new value.
    ValueChanged {
        /// The (unchanged) term.
        term: u64,
        /// The new value.
        value: Vec<u8>,
        /// The leader's identity.
        identity: String,
    },
    /// Nobody leads.
    NoLeader {
        /// The new term.
        term: u64,
    },
    /// The watch was away longer than the cluster keeps history: some
    /// events were missed. The next event is the current state.
    HistoryGone,
}

impl Election {
    pub(crate) fn new(client: Client, name: String) -> Self {
        Election { client, name }
    }

    /// Joins as a candidate with `value` and waits until this client leads.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership, Error> {
        let session = &self.client.session;
        session.ensure_valid()?;
        let value = value.into();
        let op = Op::Campaign(proto::Campaign {
            election: self.name.clone(),
            value: value.clone(),
            timeout_ms: 0,
        });
        let wait = std::time::Duration::from_secs(365 * 24 * 3600);
        // Until this leadership is handed out, a caller that leaves (or a
        // failure) resigns: a candidacy left queued would later lead for
        // nobody (see `undo`).
        let resign = Op::Resign(proto::Resign {
            election: self.name.clone(),
        });
        let key = format!("election:{}", self.name);
        settle(&self.client, &key).await;
        let mut undo_on_drop = UndoOnDrop::armed(&self.client, session, key, resign);
        let info = match self
            .client
            .inner
            .call_with_timeout(session.id, op, wait)
            .await?
        {
            response::Result::Leader(info) => info,
            other => return Err(unexpected(&other)),
        };
        // Never take someone else's term for ours.
        if !info.has_leader || info.leader_session_id != session.id {
            return Err(Error::Protocol(format!(
                "campaign answered with the leadership of session {} (term {}), not ours ({})",
                info.leader_session_id, info.term, session.id
            )));
        }
        session.ensure_valid()?;
        undo_on_drop.disarm();
        Ok(Leadership {
            client: self.client.clone(),
            name: self.name.clone(),
            term: info.term,
        })
    }

    /// Who leads now, if anyone.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, Error> {
        let op = Op::QueryLeader(proto::QueryLeader {
            election: self.name.clone(),
        });
        match self.client.inner.call(0, op).await? {
            response::Result::Leader(info) if info.has_leader => Ok(Some(LeaderInfo {
                term: info.term,
                value: info.value,
                session_id: info.leader_session_id,
                identity: info.leader_identity,
            })),
            response::Result::Leader(_) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Watches leadership changes, starting with the current state.
    pub fn watch(&self) -> LeaderWatch {
        self.watch_from(false)
    }

    /// Watches leadership from the first event the cluster still keeps
    /// (`limits.election_history` events per election): the whole history,
    /// then live changes. Starts with `HistoryGone` if older events were
    /// trimmed, as etcd's watch from a compacted revision fails.
    pub fn watch_history(&self) -> LeaderWatch {
        self.watch_from(true)
    }

    fn watch_from(&self, from_start: bool) -> LeaderWatch {
        LeaderWatch {
            client: self.client.clone(),
            name: self.name.clone(),
            last_index: 0,
            from_start,
            stream: None,
        }
    }
}

/// This client's leadership of an election.
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    name: String,
    term: u64,
}

impl Leadership {
    /// The term of this leadership; pass it as a fencing token to
    /// resources only the leader may change.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Whether this leadership may still be trusted (the session lease).
    pub fn is_valid(&self) -> bool {
        self.client.session.is_valid()
    }

    /// The latest moment at which the client may still believe it leads.
    pub fn valid_until(&self) -> Instant {
        Instant::now() + self.client.session.valid_until().saturating_sub(boottime())
    }

    /// Resolves when the leadership can no longer be trusted.
    pub async fn lost(&self) {
        self.client.session.lost().await
    }

    /// Publishes a new value to watchers.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.client.session.ensure_valid()?;
        let op = Op::Proclaim(proto::Proclaim {
            election: self.name.clone(),
            value: value.into(),
        });
        self.client
            .inner
            .call(self.client.session.id, op)
            .await
            .map(|_| ())
    }

    /// Steps down; the next candidate (if any) becomes leader.
    pub async fn resign(self) -> Result<(), Error> {
        let op = Op::Resign(proto::Resign {
            election: self.name.clone(),
        });
        self.client
            .inner
            .call(self.client.session.id, op)
            .await
            .map(|_| ())
    }
}

/// A stream of leadership changes that survives reconnects: after a
/// failure it resumes after the last event it delivered, and says so with
/// `HistoryGone` if the cluster no longer has what it missed.
#[derive(Debug)]
pub struct LeaderWatch {
    client: Client,
    name: String,
    last_index: u64,
    /// Until the first event: ask for the whole retained history.
    from_start: bool,
    stream: Option<quinn::RecvStream>,
}

impl LeaderWatch {
    /// The next event. Reconnects as needed; fails when no node can be
    /// reached within the request timeout (calling again keeps trying) or
    /// when the node refuses the watch (`INVALID_NAME` for a name outside
    /// the limits).
    pub async fn next(&mut self) -> Result<LeaderEvent, Error> {
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    let watch = proto::Watch {
                        election: self.name.clone(),
                        after_index: self.last_index,
                        from_start: self.from_start,
                    };
                    self.stream = Some(self.client.inner.open_watch(watch).await?);
                    continue;
                }
            };
            match read_frame::<WatchEvent, _>(stream).await {
                Ok(Some(event)) => {
                    if let Some(error) = event.error {
                        self.stream = None;
                        return Err(Error::from_proto(error));
                    }
                    if event.index > self.last_index {
                        self.last_index = event.index;
                    }
                    if let Some(event) = convert(event) {
                        return Ok(event);
                    }
                }
                // The node went away or ended the stream: resume elsewhere.
                Ok(None) | Err(_) => {
                    self.stream = None;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn convert(event: WatchEvent) -> Option<LeaderEvent> {
    match Kind::try_from(event.kind).ok()? {
        Kind::Elected => Some(LeaderEvent::Elected {
            term: event.term,
            value: event.value,
            identity: event.leader_identity,
        }),
        Kind::ValueChanged => Some(LeaderEvent::ValueChanged {
            term: event.term,
            value: event.value,
            identity: event.leader_identity,
        }),
        Kind::NoLeader => Some(LeaderEvent::NoLeader { term: event.term }),
        Kind::HistoryGone => Some(LeaderEvent::HistoryGone),
        Kind::Unspecified => None,
    }
}
