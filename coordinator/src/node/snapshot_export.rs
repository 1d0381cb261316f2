//! Backups over the client protocol (PROTOCOL.md, "Backups"):
//! `ExportSnapshot` serializes the serving leader's state machine once and
//! keeps it; `ReadSnapshot` hands it out a piece at a time, so that no
//! answer exceeds a frame whatever the state's size.
//!
//! Memory is bounded by one export per node: a new export replaces the
//! previous one, and an export nobody read for [`IDLE_EXPORT`] is dropped.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use paxlock::proto::{self, response, ErrorCode};

use crate::locks::Identity;
use crate::service::errors::error;
use crate::service::{access, Context};
use paxlock_core::access::Permission;

/// Most bytes of state one `ReadSnapshot` answer carries (a frame holds
/// 4 MiB).
pub const PIECE_BYTES: usize = 1 << 20;

/// How long an export is kept after its last read.
pub const IDLE_EXPORT: Duration = Duration::from_secs(60);

/// The node's current export, if any.
#[derive(Debug, Default)]
pub struct Exports {
    current: Mutex<Option<Export>>,
}

#[derive(Debug)]
struct Export {
    id: u64,
    state: Arc<Vec<u8>>,
    last_read: Instant,
}

impl Exports {
    /// Serializes the state as of the last applied entry, if this node
    /// serves as leader under its lease (its takeover applied: the state
    /// then holds every write any leader acknowledged), and keeps it for
    /// `read`.
    pub fn export(
        self: &Arc<Self>,
        context: &Context,
        caller: &Identity,
        cluster_id: &str,
    ) -> Result<response::Result, proto::Error> {
        let shared = &context.shared;
        shared
            .check_access(caller, Permission::Admin, "")
            .map_err(|denied| access::denied(shared, &denied))?;
        // Under the leader lease, as every read: no other leader can have
        // acknowledged anything newer (a deposed leader that has not yet
        // stepped down keeps its role, not its lease).
        let (leads, lease_until) = {
            let status = context.status.borrow();
            (status.is_leader, status.lease_until)
        };
        if lease_until.is_none_or(|until| context.clock.now() >= until) {
            return Err(if leads {
                error(
                    ErrorCode::Unavailable,
                    "this node leads but holds no lease yet: retry shortly",
                    true,
                )
            } else {
                context.not_leader()
            });
        }
        let (state, up_to, revision) = {
            // The machine, then the role: the order the apply loop takes them in.
            let machine = shared.machine();
            if !shared.role().serving(&machine) {
                return Err(error(
                    ErrorCode::Unavailable,
                    "this node is taking over as leader: retry shortly",
                    true,
                ));
            }
            let state = machine.snapshot().map_err(|e| {
                error(
                    ErrorCode::Internal,
                    format!("cannot serialize the state: {e}"),
                    false,
                )
            })?;
            (state, machine.last_applied_slot() + 1, machine.revision())
        };
        let id = paxlock_storage::entropy::random_u64();
        let exported = proto::SnapshotExported {
            export_id: id,
            cluster_id: cluster_id.to_string(),
            up_to,
            revision,
            total_bytes: state.len() as u64,
            crc32c: crc32c::crc32c(&state),
        };
        *self.lock() = Some(Export {
            id,
            state: Arc::new(state),
            last_read: Instant::now(),
        });
        self.drop_when_idle(id);
        Ok(response::Result::SnapshotExported(exported))
    }

    /// The export's bytes from `request.offset` on, at most [`PIECE_BYTES`].
    pub fn read(
        &self,
        context: &Context,
        caller: &Identity,
        request: &proto::ReadSnapshot,
    ) -> Result<response::Result, proto::Error> {
        let shared = &context.shared;
        shared
            .check_access(caller, Permission::Admin, "")
            .map_err(|denied| access::denied(shared, &denied))?;
        let state = {
            let mut current = self.lock();
            match current.as_mut().filter(|e| e.id == request.export_id) {
                Some(export) => {
                    export.last_read = Instant::now();
                    export.state.clone()
                }
                None => {
                    return Err(error(
                        ErrorCode::SnapshotGone,
                        "this node no longer holds that backup (a newer one replaced it, \
                         nobody read it for 60 s, or the node restarted): start the backup again",
                        false,
                    ))
                }
            }
        };
        let start = usize::try_from(request.offset)
            .ok()
            .filter(|&at| at <= state.len())
            .ok_or_else(|| {
                error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset {} is past the backup's end ({} bytes)",
                        request.offset,
                        state.len()
                    ),
                    false,
                )
            })?;
        let end = state.len().min(start + PIECE_BYTES);
        Ok(response::Result::SnapshotPiece(proto::SnapshotPiece {
            offset: request.offset,
            data: state[start..end].to_vec(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Export>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops export `id` once nobody read it for [`IDLE_EXPORT`] (a
    /// replaced export is dropped by its replacement).
    fn drop_when_idle(self: &Arc<Self>, id: u64) {
        let exports = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut deadline = Instant::now() + IDLE_EXPORT;
            loop {
                tokio::time::sleep_until(deadline.into()).await;
                let Some(exports) = exports.upgrade() else {
                    return;
                };
                let mut current = exports.lock();
                match current.as_ref() {
                    Some(e) if e.id == id && e.last_read.elapsed() >= IDLE_EXPORT => {
                        *current = None;
                        return;
                    }
                    Some(e) if e.id == id => deadline = e.last_read + IDLE_EXPORT,
                    _ => return,
                }
            }
        });
    }
}
