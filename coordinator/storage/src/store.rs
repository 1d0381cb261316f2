//! The storage contract shared by the file store and the in-memory store.

use crate::error::Result;
use crate::group_commit::{StorageStats, Ticket};
use crate::meta::Identity;
use crate::record::{Lsn, RecordRef};
use crate::recovery::Recovered;

/// Durable acceptor storage: an append-only log of records with LSNs plus
/// snapshots.
///
/// Promises every implementation keeps (checked by the conformance suite):
/// - LSNs start at 1 and increase by one per record, with no gaps, in the
///   order requests were accepted; a batch gets a contiguous range.
/// - Once a [`Ticket`] returns `Ok`, its records (and all earlier ones) survive
///   any crash and come back from [`Storage::open`] byte for byte.
/// - Records whose ticket did not return `Ok` may or may not come back, but
///   never partially and never out of order.
/// - After `write_snapshot(lsn, ..)` returns, `open` returns that snapshot and
///   only records with LSN > `lsn`.
pub trait Storage: Send + Sync + Sized {
    /// Where the durable state lives (a directory, or a simulated disk).
    type Location;
    /// Tuning knobs for this implementation.
    type Options;

    /// Opens (initialising if empty) the store at `location` for `identity`,
    /// recovering its durable contents. Refuses a location that belongs to
    /// another cluster or node, and refuses corrupt data without modifying it.
    fn open(
        location: &Self::Location,
        identity: Identity,
        options: Self::Options,
    ) -> Result<(Self, Recovered)>;

    /// Queues `records` for appending as one contiguous LSN range. May block
    /// while the store's bounded queue is full (backpressure). The records are
    /// durable only when the returned ticket's `wait()` returns `Ok`.
    fn append_batch(&self, records: &[RecordRef<'_>]) -> Result<Ticket>;

    /// Queues one record; see [`Storage::append_batch`].
    fn append(&self, kind: u8, payload: &[u8]) -> Result<Ticket> {
        self.append_batch(&[RecordRef { kind, payload }])
    }

    /// Durably stores a snapshot of state that reflects every record up to
    /// and including `covered_lsn` (and Paxos slots up to `covered_slot`),
    /// then discards log records it makes unnecessary. `covered_lsn` must
    /// already be durable and must not be below the previous snapshot's.
    fn write_snapshot(&self, covered_lsn: Lsn, covered_slot: u64, state: &[u8]) -> Result<()>;

    /// The highest LSN known durable.
    fn durable_lsn(&self) -> Lsn;

    /// A copy of the store's counters.
    fn stats(&self) -> StorageStats;
}
