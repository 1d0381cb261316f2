//! Small durable-filesystem helpers: directory fsync and atomic file replace.
//!
//! A new name (create or rename) is only durable once the *directory* is
//! fsynced; a file's contents only once the file is. Every helper here does
//! both in the order that makes a crash leave either the old or the new state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};

/// Suffix of files that are being written and not yet renamed into place.
/// Such files are garbage after a crash and are removed on open.
pub const TMP_SUFFIX: &str = ".tmp";

/// Fsyncs a directory so that file creations, renames and deletions in it
/// survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    if crate::canary::active() == crate::canary::StorageCanary::SkipDirSync {
        return Ok(());
    }
    let handle = File::open(dir).map_err(|e| StorageError::io("opening directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| StorageError::io("fsyncing directory", dir, e))
}

/// Mode of every file the store creates: the node's acceptor state and
/// lock table are its own (owner read and write only).
pub const FILE_MODE: u32 = 0o600;

/// Mode of the data directory: only the node's user may list or enter it,
/// whatever the modes of files older releases created in it.
pub const DIR_MODE: u32 = 0o700;

/// Options that create (or truncate) a file of the store, mode
/// [`FILE_MODE`].
pub fn create_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE);
    options
}

/// Makes `dir` private ([`DIR_MODE`]) if it is not. A directory this
/// process cannot change (another user's) is left as it is, with a
/// warning: the node still works, its data is just readable by others.
pub fn make_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(dir) else {
        return;
    };
    if meta.permissions().mode() & 0o777 == DIR_MODE {
        return;
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)) {
        tracing::warn!(
            dir = %dir.display(),
            "the data directory is readable by other users and cannot be made private ({e}); \
             chown it to the node's user"
        );
    }
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync
/// directory. After it returns the new contents are durable; if it fails or
/// the machine crashes midway, the old file (if any) is intact.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    let final_path = dir.join(name);
    let mut file = create_options()
        .open(&tmp_path)
        .map_err(|e| StorageError::io("creating", &tmp_path, e))?;
    file.write_all(bytes)
        .map_err(|e| StorageError::io("writing", &tmp_path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsyncing", &tmp_path, e))?;
    drop(file);
    fs::rename(&tmp_path, &final_path)
        .map_err(|e| StorageError::io("renaming into place", &final_path, e))?;
    fsync_dir(dir)
}

/// Removes leftover `*.tmp` files (interrupted atomic writes). Only called
/// after recovery has validated everything else, so a refused start never
/// modifies the directory.
pub fn remove_tmp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0usize;
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(TMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}
