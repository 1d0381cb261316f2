//! Carries the kernel's FUSE requests to the [`Model`]: no decisions
//! here beyond translating names, attributes and errors.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::model::{Attr, FsError, Kind, Model};

/// How long the kernel may cache names and attributes. Nothing but the
/// kernel changes the tree while it is mounted, and a power cut unmounts
/// it (which drops every cache), so a long time is safe.
const TTL: Duration = Duration::from_secs(60);

/// The filesystem as FUSE sees it: the shared model.
pub(crate) struct PowerFailFs {
    pub(crate) model: Arc<Mutex<Model>>,
    /// How long an fsync takes, as a device's flush does.
    pub(crate) fsync_delay: Duration,
    /// Whether the power is on: once off, every request that would change
    /// the disk (a write, a flush, a name) fails with EIO and changes
    /// nothing, a flush in progress included; reads still answer, for the
    /// processes about to be killed.
    pub(crate) powered: Arc<AtomicBool>,
}

impl PowerFailFs {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model, to change it: refused once the power is off.
    fn live(&self) -> Result<MutexGuard<'_, Model>, FsError> {
        let model = self.model();
        self.powered()?;
        Ok(model)
    }

    /// Creates a file or directory, while the power is on.
    fn create_entry(
        &self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        mode: u16,
    ) -> Result<FileAttr, FsError> {
        let attr = self.live()?.create(parent, name, kind, mode)?;
        Ok(file_attr(attr))
    }

    fn powered(&self) -> Result<(), FsError> {
        if self.powered.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(FsError::PowerOff)
        }
    }

    /// A flush: takes its time, then makes durable what `flush` names,
    /// unless the power went meanwhile.
    fn flush_after_delay(
        &self,
        flush: impl FnOnce(&mut Model) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        std::thread::sleep(self.fsync_delay);
        let mut model = self.model();
        self.powered()?;
        flush(&mut model)
    }
}

fn file_attr(a: Attr) -> FileAttr {
    let (kind, nlink) = match a.kind {
        Kind::File => (FileType::RegularFile, 1),
        Kind::Dir => (FileType::Directory, 2),
    };
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: a.mode,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn mode_bits(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for PowerFailFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.model().lookup(parent, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(a), 0),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.model().attr(ino) {
            Ok(a) => reply.attr(&TTL, &file_attr(a)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let changed = (|| {
            let mut model = self.live()?;
            if let Some(len) = size {
                model.set_len(ino, len)?;
            }
            if let Some(mode) = mode {
                model.set_mode(ino, mode_bits(mode, 0))?;
            }
            model.attr(ino)
        })();
        match changed {
            Ok(a) => reply.attr(&TTL, &file_attr(a)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.create_entry(parent, name, Kind::Dir, mode_bits(mode, umask)) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_entry(parent, name, Kind::File, mode_bits(mode, umask)) {
            Ok(attr) => reply.created(&TTL, &attr, 0, 0, 0),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(
            self.live().and_then(|mut m| m.remove(parent, name, false)),
            reply,
        );
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(
            self.live().and_then(|mut m| m.remove(parent, name, true)),
            reply,
        );
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let no_replace = match flags {
            0 => Ok(false),
            f if f == libc::RENAME_NOREPLACE => Ok(true),
            _ => Err(FsError::Invalid),
        };
        let renamed = no_replace.and_then(|no_replace| {
            self.live()?
                .rename((parent, name), (newparent, newname), no_replace)
        });
        empty(renamed, reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.model().attr(ino) {
            Ok(_) => reply.opened(0, 0),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let model = self.model();
        match model.read(ino, offset.max(0) as u64, size as usize) {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self
            .live()
            .and_then(|mut m| m.write(ino, offset.max(0) as u64, data))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The flush takes its time before the data is durable: a process
        // that acknowledges before its fsync returns is exposed for as long
        // as it would be on a real device.
        empty(self.flush_after_delay(|m| m.fsync(ino)), reply);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let listed = match self.model().list(ino) {
            Ok(listed) => listed,
            Err(e) => return reply.error(e.errno()),
        };
        let dots = [
            (ino, FileType::Directory, OsStr::new(".").to_owned()),
            (ino, FileType::Directory, OsStr::new("..").to_owned()),
        ];
        let entries = dots.into_iter().chain(listed.into_iter().map(|(name, a)| {
            let kind = match a.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            (a.ino, kind, name)
        }));
        for (i, (child, kind, name)) in entries.enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.flush_after_delay(|m| m.fsync_dir(ino)), reply);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let blocks = 1 << 30;
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let grown = (|| {
            let mut model = self.live()?;
            let end = u64::try_from(offset.saturating_add(length)).map_err(|_| FsError::Invalid)?;
            match mode {
                0 if end > model.attr(ino)?.size => model.set_len(ino, end),
                0 | libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                _ => Err(FsError::Invalid),
            }
        })();
        empty(grown, reply);
    }
}

fn empty(result: Result<(), FsError>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e.errno()),
    }
}
