//! The filesystem's state, with what a power cut would keep apart from
//! what it may lose. No I/O: the FUSE adapter (`fuse.rs`) carries the
//! kernel's requests to it, and tests can drive it directly.
//!
//! The rules are POSIX's, read strictly, as LazyFS reads them:
//!
//! - a file's bytes and size are durable once the file is fsynced
//!   (`fsync` or `fdatasync`); until then every write and size change since
//!   the last fsync may be lost, and each independently: a later write may
//!   survive an earlier one, and a write may survive only in part (torn at
//!   a 512-byte sector boundary);
//! - a name (create, rename, unlink, mkdir, rmdir) is durable once its
//!   directory is fsynced; until then a power cut puts the directory back
//!   as its last fsync left it. A file fsynced under a name that was never
//!   made durable is lost with the name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};

use paxlock_sim::rng::SimRng;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Size of the unit a torn write keeps or loses.
const SECTOR: usize = 512;

/// What went wrong, as an errno for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// The name exists.
    #[error("the name exists")]
    Exists,
    /// A directory where a file was expected.
    #[error("is a directory")]
    IsDir,
    /// A file where a directory was expected.
    #[error("not a directory")]
    NotDir,
    /// The directory is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// An argument this filesystem does not support.
    #[error("invalid argument")]
    Invalid,
    /// The power is off: nothing reaches the disk any more.
    #[error("input/output error: the power is off")]
    PowerOff,
}

impl FsError {
    /// The errno the kernel is told.
    pub fn errno(self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::PowerOff => libc::EIO,
        }
    }
}

/// A change to a file not yet made durable by an fsync.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Unsynced {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Unsynced::Write { at, bytes } => write_into(data, *at, bytes),
            Unsynced::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

fn write_into(data: &mut Vec<u8>, at: u64, bytes: &[u8]) {
    let at = at as usize;
    let end = at + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

#[derive(Debug, Default)]
struct File {
    /// What reads see.
    data: Vec<u8>,
    /// What a power cut keeps for certain: `data` as of the last fsync.
    durable: Vec<u8>,
    /// Changes since, in order.
    unsynced: Vec<Unsynced>,
}

#[derive(Debug, Default)]
struct Dir {
    /// What lookups see.
    entries: BTreeMap<OsString, u64>,
    /// What a power cut keeps: `entries` as of the last fsync.
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(File),
    Dir(Dir),
}

#[derive(Debug)]
struct Inode {
    mode: u16,
    body: Body,
}

/// What an inode is, for the kernel's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// The attributes the kernel asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// Permission bits.
    pub mode: u16,
}

/// What one power cut did, for the test's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced writes kept whole.
    pub writes_kept: u64,
    /// Unsynced writes kept in part (torn).
    pub writes_torn: u64,
    /// Unsynced writes lost.
    pub writes_lost: u64,
    /// Directories put back to their last fsync.
    pub dirs_reverted: u64,
    /// Files and directories gone because their name was never durable.
    pub inodes_lost: u64,
}

/// The whole filesystem.
#[derive(Debug)]
pub struct Model {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

impl Default for Model {
    fn default() -> Self {
        let root = Inode {
            mode: 0o755,
            body: Body::Dir(Dir::default()),
        };
        Model {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
        }
    }
}

impl Model {
    /// An empty filesystem: the root directory, durable.
    pub fn new() -> Model {
        Model::default()
    }

    fn inode(&self, ino: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&Dir, FsError> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir, FsError> {
        match &mut self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File, FsError> {
        match &mut self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// The inode named `name` in directory `parent`.
    fn entry(&self, parent: u64, name: &OsStr) -> Result<u64, FsError> {
        let dir = self.dir(parent)?;
        dir.entries.get(name).copied().ok_or(FsError::NotFound)
    }

    /// Whether `ino` may lose its name as a directory (`dir`, and then
    /// only if empty) or as a file: by an unlink or rmdir, or to a rename
    /// onto it.
    fn removable(&self, ino: u64, dir: bool) -> Result<(), FsError> {
        match (&self.inode(ino)?.body, dir) {
            (Body::File(_), true) => Err(FsError::NotDir),
            (Body::Dir(_), false) => Err(FsError::IsDir),
            (Body::Dir(d), true) if !d.entries.is_empty() => Err(FsError::NotEmpty),
            _ => Ok(()),
        }
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        let inode = self.inode(ino)?;
        let (kind, size) = match &inode.body {
            Body::File(f) => (Kind::File, f.data.len() as u64),
            Body::Dir(_) => (Kind::Dir, 0),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            mode: inode.mode,
        })
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let ino = self.entry(parent, name)?;
        self.attr(ino)
    }

    /// Creates a file or directory `name` in `parent` (not durable until
    /// `parent` is fsynced).
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        mode: u16,
    ) -> Result<Attr, FsError> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = match kind {
            Kind::File => Body::File(File::default()),
            Kind::Dir => Body::Dir(Dir::default()),
        };
        self.inodes.insert(ino, Inode { mode, body });
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    /// Removes `name` from `parent`: a file (`dir: false`) or an empty
    /// directory (`dir: true`). The inode stays until a power cut finds no
    /// name for it (a process may still have it open).
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), FsError> {
        let ino = self.entry(parent, name)?;
        self.removable(ino, dir)?;
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, replacing
    /// a file there (or an empty directory, for a directory) unless
    /// `no_replace`.
    pub fn rename(
        &mut self,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        no_replace: bool,
    ) -> Result<(), FsError> {
        let ino = self.entry(parent, name)?;
        let moving_dir = matches!(self.inode(ino)?.body, Body::Dir(_));
        if let Some(&there) = self.dir(new_parent)?.entries.get(new_name) {
            if there == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            self.removable(there, moving_dir)?;
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// The entries of directory `ino`, in name order.
    pub fn list(&self, ino: u64) -> Result<Vec<(OsString, Attr)>, FsError> {
        self.dir(ino)?
            .entries
            .iter()
            .map(|(name, &child)| Ok((name.clone(), self.attr(child)?)))
            .collect()
    }

    /// Up to `len` bytes of file `ino` from `at`.
    pub fn read(&self, ino: u64, at: u64, len: usize) -> Result<&[u8], FsError> {
        match &self.inode(ino)?.body {
            Body::File(f) => {
                let start = (at as usize).min(f.data.len());
                let end = start.saturating_add(len).min(f.data.len());
                Ok(&f.data[start..end])
            }
            Body::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// Writes `bytes` at `at` in file `ino` (not durable until fsynced).
    pub fn write(&mut self, ino: u64, at: u64, bytes: &[u8]) -> Result<(), FsError> {
        let file = self.file_mut(ino)?;
        write_into(&mut file.data, at, bytes);
        file.unsynced.push(Unsynced::Write {
            at,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    /// Sets file `ino`'s size, cutting or zero-extending it (not durable
    /// until fsynced).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), FsError> {
        let file = self.file_mut(ino)?;
        file.data.resize(len as usize, 0);
        file.unsynced.push(Unsynced::SetLen(len));
        Ok(())
    }

    /// Sets the permission bits of `ino`.
    pub fn set_mode(&mut self, ino: u64, mode: u16) -> Result<(), FsError> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.mode = mode;
        Ok(())
    }

    /// Makes file `ino`'s bytes and size durable (its name is not: that
    /// takes its directory's fsync). Costs what was written since the
    /// last fsync, not the file's size.
    pub fn fsync(&mut self, ino: u64) -> Result<(), FsError> {
        match &mut self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.body {
            Body::File(f) => {
                for change in f.unsynced.drain(..) {
                    change.apply(&mut f.durable);
                }
            }
            // An fsync of a directory opened as a file is fsyncdir.
            Body::Dir(d) => d.durable = d.entries.clone(),
        }
        Ok(())
    }

    /// Makes directory `ino`'s names durable.
    pub fn fsync_dir(&mut self, ino: u64) -> Result<(), FsError> {
        self.dir(ino)?;
        self.fsync(ino)
    }

    /// Whether anything a power cut may lose is waiting for an fsync.
    pub fn has_unsynced(&self) -> bool {
        self.inodes.values().any(|i| match &i.body {
            Body::File(f) => !f.unsynced.is_empty(),
            Body::Dir(d) => d.entries != d.durable,
        })
    }

    /// The power goes: every directory is put back to its last fsync,
    /// every file keeps its durable bytes plus, drawn from `seed`, some of
    /// its unsynced changes (each kept whole, torn at a sector boundary,
    /// or lost), and whatever no durable name reaches is gone. Every
    /// process using the filesystem must be dead first: their open files
    /// are not carried over.
    pub fn cut_power(&mut self, seed: u64) -> CutReport {
        let mut rng = SimRng::new(seed);
        let mut report = CutReport::default();
        // Inodes in a stable order, so that a seed replays the same cut.
        let order: BTreeSet<u64> = self.inodes.keys().copied().collect();
        for ino in order {
            let Some(inode) = self.inodes.get_mut(&ino) else {
                continue;
            };
            match &mut inode.body {
                Body::File(f) => {
                    let mut kept = std::mem::take(&mut f.durable);
                    for change in f.unsynced.drain(..) {
                        match (change, rng.range(0, 2)) {
                            (change, 0) => {
                                change.apply(&mut kept);
                                report.writes_kept += 1;
                            }
                            (Unsynced::Write { at, bytes }, 1) if bytes.len() > SECTOR => {
                                let sectors = bytes.len().div_ceil(SECTOR) as u64;
                                let keep = rng.range(1, sectors - 1) as usize * SECTOR;
                                write_into(&mut kept, at, &bytes[..keep]);
                                report.writes_torn += 1;
                            }
                            _ => report.writes_lost += 1,
                        }
                    }
                    f.data = kept.clone();
                    f.durable = kept;
                }
                Body::Dir(d) => {
                    if d.entries != d.durable {
                        report.dirs_reverted += 1;
                        d.entries = d.durable.clone();
                    }
                }
            }
        }
        report.inodes_lost = self.forget_unreachable();
        report
    }

    /// Drops every inode no name reaches from the root; how many.
    fn forget_unreachable(&mut self) -> u64 {
        let mut reached = BTreeSet::from([ROOT]);
        let mut frontier = vec![ROOT];
        while let Some(ino) = frontier.pop() {
            if let Ok(dir) = self.dir(ino) {
                for &child in dir.entries.values() {
                    if reached.insert(child) {
                        frontier.push(child);
                    }
                }
            }
        }
        let before = self.inodes.len();
        self.inodes.retain(|ino, _| reached.contains(ino));
        (before - self.inodes.len()) as u64
    }
}

#[cfg(test)]
mod tests;
