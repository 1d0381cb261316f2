//! Leader election: campaign, proclaim, resign, and a watch of leadership.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{unexpected, Client};
use crate::error::Error;
use crate::proto::{self, request::Op, response, watch_event::Kind, WatchEvent};
use crate::session::{Renewal, Session, SessionChoice};
use crate::undo::{settle, undo_in_background, UndoOnDrop};
use crate::watch_stream::WatchStream;

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
    /// The leadership's fencing token (see [`Leadership::fencing_token`]);
    /// `None` if it was won before the cluster spoke protocol 3.
    pub fencing_token: Option<u64>,
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
        /// The leadership's fencing token (as in
        /// [`LeaderInfo::fencing_token`]).
        fencing_token: Option<u64>,
    },
    /// The leader proclaimed a new value.
    ValueChanged {
        /// The (unchanged) term.
        term: u64,
        /// The new value.
        value: Vec<u8>,
        /// The leader's identity.
        identity: String,
        /// The leadership's (unchanged) fencing token.
        fencing_token: Option<u64>,
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

    /// Joins as a candidate with `value` and waits, however long it takes,
    /// until this client leads, on the client's shared session. For a
    /// timeout, a session of its own or manual renewal, use [`candidate`].
    ///
    /// [`candidate`]: Election::candidate
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership, Error> {
        self.candidate(value).campaign().await
    }

    /// A candidacy with `value`, to set up before it campaigns: the same
    /// options as a lock's ([`crate::LockBuilder`]).
    pub fn candidate(&self, value: impl Into<Vec<u8>>) -> CampaignBuilder {
        CampaignBuilder {
            client: self.client.clone(),
            name: self.name.clone(),
            value: value.into(),
            timeout: None,
            session: SessionChoice::shared(),
        }
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
                fencing_token: token(info.fencing_token),
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
            name: self.name.clone(),
            last_index: 0,
            from_start,
            stream: WatchStream::new(self.client.clone()),
        }
    }
}

/// Builds a candidacy; finish with `campaign`.
#[derive(Debug)]
pub struct CampaignBuilder {
    client: Client,
    name: String,
    value: Vec<u8>,
    timeout: Option<Duration>,
    session: SessionChoice,
}

impl CampaignBuilder {
    /// Gives up after `timeout` without leading: the cluster withdraws the
    /// candidacy (a logged command), so it cannot win afterwards, and the
    /// campaign fails with `TIMEOUT`. Without it, the campaign waits as
    /// long as it takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Campaigns on a session of its own with this TTL instead of the
    /// client's shared session: the leadership ends when that session does.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.session.ttl = Some(ttl);
        self
    }

    /// No background keepalive: the caller must call `Leadership::renew`
    /// before `valid_until`, or the leadership lapses (as a Kubernetes
    /// Lease does when its holder stalls). Implies a session of its own.
    pub fn manual_renewal(mut self) -> Self {
        self.session.renewal = Renewal::Manual;
        self
    }

    /// Joins as a candidate and waits until this client leads (or the
    /// timeout passes).
    pub async fn campaign(self) -> Result<Leadership, Error> {
        let own_session = self.session.is_own();
        let session = self.session.session(&self.client).await?;
        let result = self.campaign_on(&session, own_session).await;
        if result.is_err() && own_session {
            session.close(&self.client.inner).await;
        }
        result
    }

    async fn campaign_on(
        &self,
        session: &Arc<Session>,
        own_session: bool,
    ) -> Result<Leadership, Error> {
        session.ensure_valid()?;
        let timeout_ms = self.timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let op = Op::Campaign(proto::Campaign {
            election: self.name.clone(),
            value: self.value.clone(),
            timeout_ms,
        });
        // The node waits up to the timeout; allow for round trips on top.
        let wait = self
            .timeout
            .unwrap_or(NO_TIMEOUT)
            .saturating_add(Duration::from_secs(10));
        // Until this leadership is handed out, a caller that leaves (or a
        // failure) resigns: a candidacy left queued would later lead for
        // nobody (see `undo`). An own session ends with it instead.
        let key = election_key(&self.name);
        settle(&self.client, &key).await;
        let mut undo_on_drop = if own_session {
            UndoOnDrop::unarmed()
        } else {
            UndoOnDrop::armed(&self.client, session, key, resign_op(&self.name))
        };
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
            session: session.clone(),
            own_session,
            name: self.name.clone(),
            term: info.term,
            fencing_token: token(info.fencing_token),
            resigned: AtomicBool::new(false),
        })
    }
}

/// How long a campaign with no timeout may wait: effectively forever.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// What an election's waits, undos and resignations are ordered by.
fn election_key(name: &str) -> String {
    format!("election:{name}")
}

fn resign_op(name: &str) -> Op {
    Op::Resign(proto::Resign {
        election: name.to_string(),
    })
}

/// This client's leadership of an election. Dropping it resigns in the
/// background (best effort), as dropping a `LockGuard` releases;
/// `resign()` does it and reports the outcome.
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    session: Arc<Session>,
    own_session: bool,
    name: String,
    term: u64,
    fencing_token: Option<u64>,
    resigned: AtomicBool,
}

impl Leadership {
    /// The term of this leadership: one more per change of leader of this
    /// election. It orders this election's leaders only; to fence writes,
    /// use [`Leadership::fencing_token`].
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The fencing token of this leadership: drawn at the win from the
    /// sequence lock grants draw from, so strictly greater than every
    /// token granted (to any lock or leadership) before it; a proclaim
    /// keeps it. Pass it with every write to a resource only the leader
    /// may change, which must refuse lower ones ([`crate::fencing::TokenFence`]).
    /// `None` only for a leadership won before the cluster spoke
    /// protocol 3 (during a rolling upgrade from the previous release).
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Whether this leadership may still be trusted (the session lease).
    pub fn is_valid(&self) -> bool {
        !self.resigned.load(Ordering::Acquire) && self.session.is_valid()
    }

    /// The latest moment at which the client may still believe it leads.
    pub fn valid_until(&self) -> Instant {
        let session = &self.session;
        Instant::now() + session.valid_until().saturating_sub(session.now())
    }

    /// Resolves when the leadership can no longer be trusted.
    pub async fn lost(&self) {
        self.session.lost().await
    }

    /// Resolves once the lease has less than `within` left: time to finish
    /// up (or renew, with manual renewal) before `lost` fires.
    pub async fn expiring(&self, within: Duration) {
        self.session.expiring(within).await
    }

    /// Extends the leadership's lease from now (the session's keepalive):
    /// what a campaign with `manual_renewal` must call before
    /// `valid_until`. Returns the new `valid_until`.
    pub async fn renew(&self) -> Result<Instant, Error> {
        self.session.renew_once(&self.client.inner).await?;
        Ok(self.valid_until())
    }

    /// Publishes a new value to watchers.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.session.ensure_valid()?;
        let op = Op::Proclaim(proto::Proclaim {
            election: self.name.clone(),
            value: value.into(),
        });
        self.client
            .inner
            .call(self.session.id, op)
            .await
            .map(|_| ())
    }

    /// Steps down; the next candidate (if any) becomes leader. A leadership
    /// on a session of its own closes that session too.
    pub async fn resign(self) -> Result<(), Error> {
        self.resigned.store(true, Ordering::Release);
        let result = self
            .client
            .inner
            .call(self.session.id, resign_op(&self.name))
            .await
            .map(|_| ());
        if self.own_session {
            self.session.close(&self.client.inner).await;
        }
        result
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.resigned.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.own_session {
            // Ordered before the next campaign in this election.
            let key = election_key(&self.name);
            let op = resign_op(&self.name);
            undo_in_background(&self.client, self.session.clone(), key, op);
        } else if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (client, session) = (self.client.clone(), self.session.clone());
            handle.spawn(async move { session.close(&client.inner).await });
        }
    }
}

/// A stream of leadership changes that survives reconnects: after a
/// failure it resumes after the last event it delivered, and says so with
/// `HistoryGone` if the cluster no longer has what it missed.
#[derive(Debug)]
pub struct LeaderWatch {
    name: String,
    last_index: u64,
    /// Until the first event: ask for the whole retained history.
    from_start: bool,
    stream: WatchStream,
}

impl LeaderWatch {
    /// The next event. Reconnects as needed; fails when no node can be
    /// reached within the request timeout (calling again keeps trying) or
    /// when the node refuses the watch (`INVALID_NAME` for a name outside
    /// the limits).
    pub async fn next(&mut self) -> Result<LeaderEvent, Error> {
        loop {
            let open = || {
                Op::Watch(proto::Watch {
                    election: self.name.clone(),
                    after_index: self.last_index,
                    from_start: self.from_start,
                })
            };
            let event: WatchEvent = self.stream.next(open).await?;
            if event.index > self.last_index {
                self.last_index = event.index;
            }
            if let Some(event) = convert(event) {
                return Ok(event);
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
            fencing_token: token(event.fencing_token),
        }),
        Kind::ValueChanged => Some(LeaderEvent::ValueChanged {
            term: event.term,
            value: event.value,
            identity: event.leader_identity,
            fencing_token: token(event.fencing_token),
        }),
        Kind::NoLeader => Some(LeaderEvent::NoLeader { term: event.term }),
        Kind::HistoryGone => Some(LeaderEvent::HistoryGone),
        Kind::Unspecified => None,
    }
}

/// A leadership's token from the wire, where 0 stands for none (a win
/// before protocol 3; tokens start at 1).
fn token(wire: u64) -> Option<u64> {
    (wire != 0).then_some(wire)
}
