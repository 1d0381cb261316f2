//! Learner side: which chosen entries the application has seen, and
//! catching up from peers when entries are missing: by entries, or by a
//! snapshot fetched in chunks when the entries were compacted away.

use super::config::Config;
use super::durable::DurableState;
use super::effects::ChosenEntry;
use super::message::{Message, SnapshotChunk};
use super::types::{Nanos, NodeId, Slot, Snapshot};
use super::wire_size::{entry_bytes, MESSAGE_OVERHEAD_BYTES};

/// Requests for the next chunk of a snapshot sent without any chunk
/// arriving, after which the download is given up (the peer may be gone,
/// or have compacted again) and catch-up starts over, maybe elsewhere.
const MAX_UNANSWERED_CHUNK_REQUESTS: u32 = 10;

/// A snapshot being fetched from a peer, one chunk at a time.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    /// Who sends it (the sender of the latest chunk).
    peer: NodeId,
    /// The snapshot covers every slot below this.
    up_to: Slot,
    /// Its whole length, as its first chunk announced (at most
    /// `Config::max_snapshot_bytes`, checked on receipt).
    total_bytes: u64,
    /// The bytes received so far, in order.
    data: Vec<u8>,
    /// When the latest chunk request went out.
    last_request_at: Nanos,
    /// Requests sent since the latest chunk arrived.
    unanswered: u32,
}

/// What a running snapshot download asks of the learner on a tick.
#[derive(Debug)]
enum DownloadStep {
    /// No download runs: ordinary catch-up applies.
    Idle,
    /// Its next chunk was asked for recently: ask nothing.
    Wait,
    /// Ask this peer (again) for the next chunk.
    Ask(NodeId, Message),
}

/// What a received snapshot chunk leads to.
#[derive(Debug)]
pub(crate) enum ChunkOutcome {
    /// Not the chunk the download needs (or a snapshot we are past).
    Ignored,
    /// Ask `peer` for the rest.
    Request {
        /// Who to ask.
        peer: NodeId,
        /// The request.
        msg: Message,
    },
    /// The whole snapshot arrived.
    Complete(Snapshot),
}

/// Volatile learner state.
#[derive(Debug, Clone)]
pub(crate) struct Learner {
    /// Next slot to hand to the application.
    pub(crate) applied: Slot,
    /// A peer said slots below this are chosen; we are not there yet.
    pub(crate) catch_up_target: Slot,
    pub(crate) catch_up_peer: Option<NodeId>,
    pub(crate) last_request_at: Option<Nanos>,
    /// Our commit index when the last catch-up request went out.
    pub(crate) last_request_commit: Option<Slot>,
    /// Whom the last catch-up request went to.
    pub(crate) last_asked: Option<NodeId>,
    /// The snapshot being fetched, if any.
    pub(crate) download: Option<Download>,
}

impl Learner {
    pub(crate) fn new(applied: Slot) -> Learner {
        Learner {
            applied,
            catch_up_target: applied,
            catch_up_peer: None,
            last_request_at: None,
            last_request_commit: None,
            last_asked: None,
            download: None,
        }
    }

    /// Remember that `peer` knows slots below `target` are chosen.
    pub(crate) fn want(&mut self, target: Slot, peer: NodeId) {
        if target > self.catch_up_target {
            self.catch_up_target = target;
            self.catch_up_peer = Some(peer);
        }
    }

    /// Rule "catch up by pull, rate-limited": one request per heartbeat
    /// interval, so a lagging node costs its peer a bounded amount of work.
    /// While a snapshot downloads, the request is for its next chunk.
    pub(crate) fn request_due(
        &mut self,
        now: Nanos,
        commit: Slot,
        cfg: &Config,
        peers: &[NodeId],
    ) -> Option<(NodeId, Message)> {
        match self.chunk_request_due(now, commit, cfg) {
            DownloadStep::Idle => {}
            DownloadStep::Wait => return None,
            DownloadStep::Ask(peer, msg) => return Some((peer, msg)),
        }
        if commit >= self.catch_up_target {
            return None;
        }
        let informer = self.catch_up_peer?;
        if self
            .last_request_at
            .is_some_and(|t| now.since(t) < cfg.heartbeat_interval_ns)
        {
            return None;
        }
        // Rule "ask around": the peer that told us of the target may not
        // be able to serve it: it may have restarted and lost chosen
        // markers that were not yet on disk, be cut off, or its answer may
        // have been lost (a link still connecting drops what was queued
        // on it). If the last request got us nowhere, ask the next one
        // after the peer asked last, among the members and the informer,
        // so that each is asked in turn: starting over from the informer,
        // which every heartbeat names again, asked the same (dead) member
        // for ever, and a node joining after every first voter had gone
        // never caught up.
        let mut peer = informer;
        if self.last_request_commit == Some(commit) {
            let mut candidates = peers.to_vec();
            candidates.push(informer);
            peer = next_peer(&candidates, self.last_asked.unwrap_or(informer));
        }
        self.last_request_at = Some(now);
        self.last_request_commit = Some(commit);
        self.last_asked = Some(peer);
        Some((peer, Message::CatchUpRequest { from_slot: commit }))
    }

    /// What a running download needs now: nothing else is asked for while
    /// one runs, and its next chunk is asked for again if none arrived for
    /// two heartbeat intervals.
    fn chunk_request_due(&mut self, now: Nanos, commit: Slot, cfg: &Config) -> DownloadStep {
        let Some(d) = self.download.as_mut() else {
            return DownloadStep::Idle;
        };
        if d.up_to <= commit || d.unanswered >= MAX_UNANSWERED_CHUNK_REQUESTS {
            self.download = None;
            return DownloadStep::Idle;
        }
        if now.since(d.last_request_at) < 2 * cfg.heartbeat_interval_ns {
            return DownloadStep::Wait;
        }
        d.last_request_at = now;
        d.unanswered += 1;
        let msg = Message::SnapshotRequest {
            up_to: d.up_to,
            offset: d.data.len() as u64,
        };
        DownloadStep::Ask(d.peer, msg)
    }

    /// Rule "a snapshot arrives in order": a chunk is kept only if it
    /// continues the running download (or starts one, at offset 0, for a
    /// snapshot newer than ours and than the running download's); the next
    /// one is asked for as soon as one arrives.
    pub(crate) fn on_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        commit: Slot,
        now: Nanos,
    ) -> ChunkOutcome {
        if chunk.up_to <= commit {
            return ChunkOutcome::Ignored;
        }
        let continues = self
            .download
            .as_ref()
            .is_some_and(|d| d.up_to == chunk.up_to);
        if !continues {
            let newer = self.download.as_ref().is_none_or(|d| d.up_to < chunk.up_to);
            if chunk.offset != 0 || !newer {
                return ChunkOutcome::Ignored;
            }
            self.download = Some(Download {
                peer: from,
                up_to: chunk.up_to,
                total_bytes: chunk.total_bytes,
                data: Vec::new(),
                last_request_at: now,
                unanswered: 0,
            });
        }
        let Some(d) = self.download.as_mut() else {
            return ChunkOutcome::Ignored;
        };
        if chunk.offset != d.data.len() as u64 || chunk.total_bytes != d.total_bytes {
            return ChunkOutcome::Ignored;
        }
        d.data.extend_from_slice(&chunk.data);
        d.peer = from;
        d.last_request_at = now;
        d.unanswered = 0;
        if (d.data.len() as u64) < d.total_bytes {
            let msg = Message::SnapshotRequest {
                up_to: d.up_to,
                offset: d.data.len() as u64,
            };
            return ChunkOutcome::Request { peer: from, msg };
        }
        match self.download.take() {
            Some(d) => ChunkOutcome::Complete(Snapshot {
                up_to: d.up_to,
                data: d.data,
            }),
            None => ChunkOutcome::Ignored,
        }
    }

    /// Chosen entries not yet handed to the application, in slot order.
    pub(crate) fn drain(&mut self, state: &DurableState, commit: Slot, out: &mut Vec<ChosenEntry>) {
        while self.applied < commit {
            let Some(e) = state.log.get(&self.applied) else {
                debug_assert!(false, "slot {:?} below commit missing", self.applied);
                return;
            };
            debug_assert!(e.chosen);
            out.push(ChosenEntry {
                slot: self.applied,
                batch: e.batch.clone(),
            });
            self.applied = self.applied.next();
        }
    }
}

/// The peer after `peer` in `peers` (wrapping; `peers` holds the other
/// members, never this node).
fn next_peer(peers: &[NodeId], peer: NodeId) -> NodeId {
    let others = peers.iter().copied();
    let after = others.clone().filter(|m| *m > peer).min();
    after.or_else(|| others.min()).unwrap_or(peer)
}

/// The chunk of `snapshot` that starts at `offset` (at most
/// `snapshot_chunk_bytes` long).
fn chunk_of(snapshot: &Snapshot, offset: u64, cfg: &Config) -> SnapshotChunk {
    let start = (offset as usize).min(snapshot.data.len());
    let end = start
        .saturating_add(cfg.snapshot_chunk_bytes)
        .min(snapshot.data.len());
    SnapshotChunk {
        up_to: snapshot.up_to,
        total_bytes: snapshot.data.len() as u64,
        offset: start as u64,
        data: bytes::Bytes::copy_from_slice(&snapshot.data[start..end]),
    }
}

/// Answer to a catch-up request: chosen entries from `from_slot`, as many
/// as fit one message, or, if `from_slot` was compacted away, the first
/// chunk of the snapshot.
pub(crate) fn serve_catch_up(
    state: &DurableState,
    from_slot: Slot,
    commit: Slot,
    cfg: &Config,
) -> Message {
    if let Some(snapshot) = &state.snapshot {
        if from_slot < snapshot.up_to {
            return Message::CatchUp {
                snapshot: Some(chunk_of(snapshot, 0, cfg)),
                entries: Vec::new(),
            };
        }
    }
    let floor = state.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
    let start = from_slot.max(floor);
    // `from_slot` is untrusted: an empty range, never an inverted one.
    let end = commit.max(start);
    let budget = cfg.max_message_bytes.saturating_sub(MESSAGE_OVERHEAD_BYTES);
    let mut bytes = 0usize;
    let mut entries = Vec::new();
    for (slot, e) in state.log.range(start..end).take(cfg.max_catchup_entries) {
        bytes = bytes.saturating_add(entry_bytes(&e.batch));
        // At least one entry, so catch-up always moves on (an entry too
        // large for the bound predates the bound and travels alone).
        if !entries.is_empty() && bytes > budget {
            break;
        }
        entries.push((*slot, e.batch.clone()));
    }
    Message::CatchUp {
        snapshot: None,
        entries,
    }
}

/// Answer to a request for a snapshot's chunk: that chunk, or the first
/// chunk of a newer snapshot if this node compacted since; nothing if it
/// has no snapshot as new as the one asked for.
pub(crate) fn serve_snapshot_chunk(
    state: &DurableState,
    up_to: Slot,
    offset: u64,
    cfg: &Config,
) -> Option<Message> {
    let snapshot = state.snapshot.as_ref()?;
    let chunk = if snapshot.up_to == up_to && offset < snapshot.data.len() as u64 {
        chunk_of(snapshot, offset, cfg)
    } else if snapshot.up_to > up_to {
        chunk_of(snapshot, 0, cfg)
    } else {
        return None;
    };
    Some(Message::CatchUp {
        snapshot: Some(chunk),
        entries: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_that_got_nowhere_asks_the_next_member() {
        let cfg = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let hb = cfg.heartbeat_interval_ns;
        let peers = [NodeId(2), NodeId(3)];
        let mut learner = Learner::new(Slot(5));
        learner.want(Slot(10), NodeId(2));
        let at = |i: u64| Nanos(i * hb);
        let ask = |peer: u64, from: u64| {
            Some((
                NodeId(peer),
                Message::CatchUpRequest {
                    from_slot: Slot(from),
                },
            ))
        };
        assert_eq!(learner.request_due(at(1), Slot(5), &cfg, &peers), ask(2, 5));
        // Rate-limited within one heartbeat interval.
        assert_eq!(learner.request_due(at(1), Slot(5), &cfg, &peers), None);
        // No progress: the next member, skipping ourselves, wrapping.
        assert_eq!(learner.request_due(at(2), Slot(5), &cfg, &peers), ask(3, 5));
        assert_eq!(learner.request_due(at(3), Slot(5), &cfg, &peers), ask(2, 5));
        // Progress: the same peer again.
        assert_eq!(learner.request_due(at(4), Slot(7), &cfg, &peers), ask(2, 7));
        // Caught up: nothing to ask.
        assert_eq!(learner.request_due(at(5), Slot(10), &cfg, &peers), None);
    }

    /// Regression (real processes, 2 runs in 10): a node joining after
    /// every first voter it is configured with had gone hears the leader
    /// (node 4, not among the members it knows), whose answer to its first
    /// request is lost. Each heartbeat names the leader again; the
    /// requests used to go to the member after it, node 1 (gone), for
    /// ever. They go round everyone, the leader included.
    #[test]
    fn a_lost_answer_from_an_unknown_leader_is_asked_again_in_turn() {
        let cfg = Config::new(NodeId(6), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let hb = cfg.heartbeat_interval_ns;
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut learner = Learner::new(Slot(0));
        let mut asked = Vec::new();
        for i in 1..=8u64 {
            learner.want(Slot(100 * i), NodeId(4));
            if let Some((peer, _)) = learner.request_due(Nanos(i * hb), Slot(0), &cfg, &members) {
                asked.push(peer.0);
            }
        }
        assert_eq!(asked, vec![4, 1, 2, 3, 4, 1, 2, 3]);
    }
}
