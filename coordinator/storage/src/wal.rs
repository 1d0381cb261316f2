//! The file-backed store: segment files + group-commit writer thread (or
//! inline writes) + snapshots, opened through recovery.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Result, StorageError};
use crate::fsutil;
use crate::group_commit::{Command, Shared, StorageStats, Ticket, Writer, WriterLimits};
use crate::meta::{check_identity, write_identity, Identity};
use crate::record::{Lsn, RecordRef};
use crate::recovery::{recover_dir, Recovered};
use crate::segment::{create_segment, list_segments, SEGMENT_HEADER_BYTES};
use crate::snapshot::{list_snapshots, write_snapshot_file, SnapshotData};
use crate::store::Storage;

/// Tuning for [`FileStore`]. Every limit is a hard bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// A segment is closed and a new one started before it would grow past
    /// this size (a single larger record still gets a segment of its own).
    pub segment_size_limit_bytes: u64,
    /// Largest accepted payload; larger appends are rejected, and recovery
    /// treats a header claiming more as damaged.
    pub max_record_bytes: usize,
    /// Capacity of the request queue, in `append_batch` calls. When full,
    /// producers block until the writer drains it (backpressure).
    pub queue_capacity_requests: usize,
    /// One group commit stops taking requests from the queue after this many
    /// frame bytes, bounding the work behind one fsync.
    pub max_group_commit_bytes: usize,
    /// One group commit takes at most this many requests.
    pub max_group_commit_requests: usize,
    /// Write and fsync on the caller's thread instead of handing appends to
    /// the group-commit writer thread. For a store with one producer that
    /// already batches (the node's persister thread) this saves two thread
    /// wake-ups per fsync, which on a small machine is a measurable part of
    /// a commit's latency; concurrent callers then serialise on a mutex and
    /// no longer share fsyncs.
    pub inline_writes: bool,
    /// The active segment is zero-filled this many bytes at a time ahead of
    /// the records, so that an fdatasync rarely has to write file metadata
    /// (size, block map) along with the records; 0 turns this off. Sealed
    /// segments are trimmed to their records.
    pub preallocate_bytes: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            segment_size_limit_bytes: 64 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
            queue_capacity_requests: 4096,
            max_group_commit_bytes: 8 * 1024 * 1024,
            max_group_commit_requests: 4096,
            inline_writes: false,
            preallocate_bytes: 1024 * 1024,
        }
    }
}

/// The durable store on a local directory. Cheap to share across threads
/// (`&FileStore` is enough to append). Dropping it drains the queue, makes
/// everything queued durable and joins the writer thread.
pub struct FileStore {
    dir: PathBuf,
    options: FileStoreOptions,
    engine: Engine,
    shared: Arc<Shared>,
    /// Serialises snapshot writes and remembers the newest covered LSN.
    newest_snapshot_lsn: Mutex<Lsn>,
    /// Holds an exclusive `flock` on the directory while the store is open,
    /// so a second process (or a second store) cannot interleave writes.
    /// Released by the kernel when the process dies, even by SIGKILL.
    _dir_lock: File,
}

/// Who writes the segment files.
enum Engine {
    /// The group-commit writer thread, fed through a bounded queue.
    Thread {
        queue: Option<SyncSender<Command>>,
        handle: Option<JoinHandle<()>>,
    },
    /// Whichever thread appends, one at a time.
    Inline(Mutex<Writer>),
}

impl FileStore {
    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Carries out `command`; its completion is sent once it is durable
    /// (inline: before this returns).
    fn send(&self, command: Command) -> Result<()> {
        match &self.engine {
            Engine::Thread { queue, .. } => {
                let queue = queue.as_ref().ok_or(StorageError::Closed)?;
                // Blocks while the queue is full: this is the backpressure point.
                queue.send(command).map_err(|_| StorageError::Closed)
            }
            Engine::Inline(writer) => {
                // A panic mid-write may have left the writer's idea of the
                // files wrong: refuse further writes, as after a failed fsync.
                let mut writer = writer.lock().map_err(|_| StorageError::WriterFailed {
                    reason: "an earlier write panicked".to_string(),
                })?;
                writer.commit_group(&mut vec![command]);
                Ok(())
            }
        }
    }

    fn check_not_failed(&self) -> Result<()> {
        match self.shared.failure() {
            Some(reason) => Err(StorageError::WriterFailed { reason }),
            None => Ok(()),
        }
    }
}

/// Creates `dir` if needed, locks it, and checks or writes its identity
/// file. Returns the lock guard. Locking the directory itself (not a lock
/// file) means a refused open creates nothing.
fn prepare_dir(dir: &Path, identity: Identity) -> Result<File> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(fsutil::DIR_MODE)
            .create(dir)
            .map_err(|e| StorageError::io("creating data directory", dir, e))?;
    }
    let lock = File::open(dir).map_err(|e| StorageError::io("opening data directory", dir, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StorageError::DirectoryLocked {
                dir: dir.to_path_buf(),
            })
        }
        Err(TryLockError::Error(e)) => {
            return Err(StorageError::io("locking data directory", dir, e))
        }
    }
    // Also a directory the operator (or an older release) made.
    fsutil::make_private(dir);
    if check_identity(dir, identity)? {
        return Ok(lock);
    }
    if !list_segments(dir)?.is_empty() || !list_snapshots(dir)?.is_empty() {
        return Err(StorageError::IdentityMissing {
            dir: dir.to_path_buf(),
        });
    }
    // A fresh directory, perhaps made by the caller just now: its own entry
    // must be durable before anything in it counts as saved.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::fsync_dir(parent)?;
    }
    write_identity(dir, identity)?;
    Ok(lock)
}

impl Storage for FileStore {
    type Location = PathBuf;
    type Options = FileStoreOptions;

    fn open(
        dir: &PathBuf,
        identity: Identity,
        options: FileStoreOptions,
    ) -> Result<(Self, Recovered)> {
        if options.segment_size_limit_bytes <= SEGMENT_HEADER_BYTES as u64
            || options.queue_capacity_requests == 0
            || options.max_group_commit_requests == 0
            || options.max_record_bytes > u32::MAX as usize
        {
            return Err(StorageError::InvalidArgument {
                reason: format!("unusable FileStoreOptions {options:?}"),
            });
        }
        let dir_lock = prepare_dir(dir, identity)?;
        let (recovered, layout) = recover_dir(dir, options.max_record_bytes)?;
        let shared = Arc::new(Shared::default());
        let covered = recovered
            .snapshot
            .as_ref()
            .map_or(Lsn::ZERO, |s| s.covered_lsn);

        let mut segments: VecDeque<_> = layout.segments.into();
        let mut wal_next_lsn = layout.wal_next_lsn;
        let (active, active_salt, active_len_bytes, active_allocated_bytes) = match segments.back()
        {
            Some(last) => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(&last.path)
                    .map_err(|e| StorageError::io("opening segment", &last.path, e))?;
                file.seek(SeekFrom::Start(layout.last_len_bytes))
                    .map_err(|e| StorageError::io("seeking in segment", &last.path, e))?;
                (
                    file,
                    layout.last_salt,
                    layout.last_len_bytes,
                    layout.last_allocated_bytes,
                )
            }
            None => {
                let first_lsn = covered.next();
                wal_next_lsn = first_lsn;
                let segment = create_segment(dir, 1, first_lsn)?;
                segments.push_back(crate::recovery::SegmentInfo {
                    seq: 1,
                    first_lsn,
                    path: dir.join(crate::segment::segment_file_name(1)),
                });
                let header_end = SEGMENT_HEADER_BYTES as u64;
                (segment.file, segment.salt, header_end, header_end)
            }
        };
        let durable = recovered.last_lsn();
        let mut writer = Writer {
            dir: dir.clone(),
            segments,
            active,
            active_salt,
            active_len_bytes,
            active_allocated_bytes,
            next_lsn: wal_next_lsn.max(covered.next()),
            limits: WriterLimits {
                segment_size_limit_bytes: options.segment_size_limit_bytes,
                max_group_commit_bytes: options.max_group_commit_bytes,
                max_group_commit_requests: options.max_group_commit_requests,
                preallocate_bytes: options.preallocate_bytes,
            },
            shared: Arc::clone(&shared),
        };
        // The snapshot may cover LSNs the WAL lost (only possible if an
        // acknowledged tail was damaged); start a fresh segment so LSNs inside
        // one segment stay contiguous.
        if writer.next_lsn != wal_next_lsn {
            writer.roll()?;
        }
        shared.durable_lsn.store(durable.0, Ordering::Release);

        let engine = if options.inline_writes {
            Engine::Inline(Mutex::new(writer))
        } else {
            let (queue, rx) = sync_channel(options.queue_capacity_requests);
            let handle = std::thread::Builder::new()
                .name("paxlock-wal-writer".to_string())
                .spawn(move || writer.run(rx))
                .map_err(|e| StorageError::io("spawning WAL writer thread for", dir, e))?;
            Engine::Thread {
                queue: Some(queue),
                handle: Some(handle),
            }
        };
        Ok((
            FileStore {
                dir: dir.clone(),
                options,
                engine,
                shared,
                newest_snapshot_lsn: Mutex::new(covered),
                _dir_lock: dir_lock,
            },
            recovered,
        ))
    }

    fn append_batch(&self, records: &[RecordRef<'_>]) -> Result<Ticket> {
        self.check_not_failed()?;
        if records.is_empty() {
            return Err(StorageError::InvalidArgument {
                reason: "append_batch needs at least one record".to_string(),
            });
        }
        if let Some(too_big) = records
            .iter()
            .find(|r| r.payload.len() > self.options.max_record_bytes)
        {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "record payload of {} bytes exceeds max_record_bytes {}",
                    too_big.payload.len(),
                    self.options.max_record_bytes
                ),
            });
        }
        let owned = records
            .iter()
            .map(|r| (r.kind, r.payload.to_vec()))
            .collect();
        let (ticket, done) = Ticket::pending();
        self.send(Command::Append {
            records: owned,
            done,
        })?;
        Ok(ticket)
    }

    fn write_snapshot(&self, covered_lsn: Lsn, covered_slot: u64, state: &[u8]) -> Result<()> {
        self.check_not_failed()?;
        let mut newest = match self.newest_snapshot_lsn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let durable = self.durable_lsn();
        if covered_lsn > durable || covered_lsn < *newest {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "snapshot must cover an LSN between the previous snapshot ({}) and the durable LSN ({durable}); got {covered_lsn}",
                    *newest
                ),
            });
        }
        write_snapshot_file(
            &self.dir,
            &SnapshotData {
                covered_lsn,
                covered_slot,
                state: state.to_vec(),
            },
        )?;
        *newest = covered_lsn;
        let (done, result) = sync_channel(1);
        self.send(Command::Prune { covered_lsn, done })?;
        result.recv().unwrap_or(Err(StorageError::Closed))
    }

    fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable_lsn.load(Ordering::Acquire))
    }

    fn stats(&self) -> StorageStats {
        self.shared.counters.snapshot(self.durable_lsn())
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Engine::Thread { queue, handle } = &mut self.engine {
            // Closing the queue lets the writer finish what is queued and exit.
            drop(queue.take());
            if let Some(handle) = handle.take() {
                if handle.join().is_err() {
                    tracing::error!(dir = %self.dir.display(), "WAL writer thread panicked");
                }
            }
        }
    }
}
