//! A filesystem for tests that can lose power.
//!
//! A process killed with SIGKILL leaves its writes in the page cache, so a
//! kill -9 test passes whether or not the process fsynced. A
//! [`PowerFailDisk`] is a FUSE filesystem mounted at a folder (a node's
//! data directory) that keeps what was made durable apart from what was
//! not, and when the power goes ([`PowerFailDisk::power_off`], then
//! [`PowerFailDisk::restore_power`]) keeps only the first (and,
//! drawn from a seed, some of the rest, whole or torn), as a disk losing
//! power may. The rules are in [`model`]; `fuse.rs` carries the kernel's
//! requests to it.
//!
//! Mounting needs `/dev/fuse`, root (or FUSE permissions) and
//! `fusermount3` (Debian's `fuse3`).

pub mod model;

mod fuse;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{BackgroundSession, MountOption};

pub use model::{CutReport, Model};

/// Why the disk could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum PowerFailError {
    /// The FUSE mount failed.
    #[error("mounting the power-fail filesystem at {path}: {source} (it needs /dev/fuse, root and fusermount3 from Debian's fuse3)")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the mount said.
        source: std::io::Error,
    },
}

/// A mounted power-fail filesystem. Unmounted when dropped, which waits
/// until no process uses it: kill those first (the power-loss test's
/// cluster is dropped before its disks).
pub struct PowerFailDisk {
    model: Arc<Mutex<Model>>,
    mountpoint: PathBuf,
    fsync_delay: Duration,
    powered: Arc<AtomicBool>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for PowerFailDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerFailDisk")
            .field("mountpoint", &self.mountpoint)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

impl PowerFailDisk {
    /// Mounts an empty filesystem at `mountpoint` (an existing, empty
    /// folder). Its root directory is durable from the start.
    pub fn mount(mountpoint: &Path) -> Result<PowerFailDisk, PowerFailError> {
        PowerFailDisk::mount_with_fsync_delay(mountpoint, Duration::ZERO)
    }

    /// Like [`mount`](Self::mount), with every fsync taking `fsync_delay`
    /// before what it flushes is durable, as on a real device: the longer
    /// it takes, the more often a cut finds writes not yet durable.
    pub fn mount_with_fsync_delay(
        mountpoint: &Path,
        fsync_delay: Duration,
    ) -> Result<PowerFailDisk, PowerFailError> {
        let mut disk = PowerFailDisk {
            model: Arc::new(Mutex::new(Model::new())),
            mountpoint: mountpoint.to_path_buf(),
            fsync_delay,
            powered: Arc::new(AtomicBool::new(true)),
            session: None,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> Result<(), PowerFailError> {
        let fs = fuse::PowerFailFs {
            model: self.model.clone(),
            fsync_delay: self.fsync_delay,
            powered: self.powered.clone(),
        };
        let options = [MountOption::FSName("paxlock-powerfail".into())];
        let session = fuser::spawn_mount2(fs, &self.mountpoint, &options).map_err(|source| {
            PowerFailError::Mount {
                path: self.mountpoint.clone(),
                source,
            }
        })?;
        self.session = Some(session);
        Ok(())
    }

    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            session.join();
        }
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power goes, now: from here on every write, flush or change of
    /// names fails with EIO and changes nothing, a flush in progress
    /// included (what it was flushing is not durable). Kill the processes using the disk next,
    /// then [`restore_power`](Self::restore_power).
    pub fn power_off(&self) {
        self.powered.store(false, Ordering::SeqCst);
    }

    /// The power comes back after [`power_off`](Self::power_off) (which
    /// this implies if it was not called): unmounts (dropping the kernel's
    /// caches, as a reboot does), keeps what was durable and, drawn from
    /// `seed`, some unsynced writes whole or torn ([`Model::cut_power`]),
    /// and mounts again. Every process using the disk must be dead
    /// (killed) first, or the unmount waits for them.
    pub fn restore_power(&mut self, seed: u64) -> Result<CutReport, PowerFailError> {
        self.power_off();
        self.detach();
        let report = self
            .model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cut_power(seed);
        self.powered.store(true, Ordering::SeqCst);
        self.attach()?;
        Ok(report)
    }

    /// Whether a cut now could lose anything (something waits for an
    /// fsync).
    pub fn has_unsynced(&self) -> bool {
        self.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_unsynced()
    }
}

impl Drop for PowerFailDisk {
    fn drop(&mut self) {
        self.detach();
    }
}
