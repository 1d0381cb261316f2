//! The filesystem through the kernel: real files, real fsync, a real
//! unmount and mount around each power cut. Needs root, /dev/fuse and
//! fusermount3; skips (saying why) where they are missing, unless
//! `PAXLOCK_REQUIRE_SYSTEM_TESTS=1`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use paxlock_launcher::requires::{machine_has, Need};
use paxlock_powerfail::PowerFailDisk;

/// Whether this machine can mount a FUSE filesystem (the workspace's one
/// requirement check: skip with a reason, or fail under CI).
fn can_mount(test: &str) -> bool {
    machine_has(
        test,
        &[Need::Device("/dev/fuse"), Need::Tool("fusermount3")],
    )
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[test]
fn synced_data_and_names_survive_a_cut_and_unsynced_names_do_not() {
    if !can_mount("synced_data_and_names_survive_a_cut_and_unsynced_names_do_not") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut disk = PowerFailDisk::mount(dir.path()).unwrap();
    let root = dir.path();

    let mut wal = File::create(root.join("wal")).unwrap();
    wal.write_all(b"acknowledged").unwrap();
    wal.sync_data().unwrap();
    fsync_dir(root).unwrap();
    wal.write_all_at(&[b'?'; 8192], 12).unwrap();

    fs::create_dir(root.join("snapshots")).unwrap();
    fsync_dir(root).unwrap();
    fs::write(root.join("snapshots/tmp"), b"state").unwrap();
    File::open(root.join("snapshots/tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fsync_dir(&root.join("snapshots")).unwrap();
    fs::rename(root.join("snapshots/tmp"), root.join("snapshots/current")).unwrap();
    // No fsync of `snapshots`: the rename is not durable.
    fs::write(root.join("never-synced"), b"x").unwrap();
    drop(wal);

    let report = disk.restore_power(7).unwrap();
    let wal = fs::read(root.join("wal")).unwrap();
    assert_eq!(&wal[..12], b"acknowledged");
    // What survived of the unsynced write: some of its pieces (the kernel
    // may have split it), and zeros where a lost piece left a hole.
    assert!(wal[12..].iter().all(|&b| b == b'?' || b == 0));
    assert!(!root.join("never-synced").exists());
    assert!(!root.join("snapshots/current").exists());
    assert_eq!(fs::read(root.join("snapshots/tmp")).unwrap(), b"state");
    assert!(report.dirs_reverted >= 2, "{report:?}");

    // The disk works after the cut, and a synced rename now survives.
    fs::rename(root.join("snapshots/tmp"), root.join("snapshots/current")).unwrap();
    fsync_dir(&root.join("snapshots")).unwrap();
    disk.restore_power(8).unwrap();
    assert_eq!(fs::read(root.join("snapshots/current")).unwrap(), b"state");
}

#[test]
fn unsynced_appends_are_lost_on_some_cuts() {
    if !can_mount("unsynced_appends_are_lost_on_some_cuts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut disk = PowerFailDisk::mount(dir.path()).unwrap();
    let path = dir.path().join("wal");
    let mut shorter = 0;
    for seed in 0..8 {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        fsync_dir(dir.path()).unwrap();
        let before = f.metadata().unwrap().len();
        f.write_all(&[1; 4096]).unwrap();
        drop(f);
        disk.restore_power(seed).unwrap();
        let after = fs::metadata(&path).unwrap().len();
        assert!(after >= before && after <= before + 4096);
        shorter += u64::from(after < before + 4096);
    }
    assert!(shorter > 0, "no cut in 8 lost an unsynced append");
}

#[test]
fn after_the_power_goes_nothing_is_flushed_or_changed() {
    if !can_mount("after_the_power_goes_nothing_is_flushed_or_changed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut disk = PowerFailDisk::mount(dir.path()).unwrap();
    let path = dir.path().join("wal");
    let f = File::create(&path).unwrap();
    fsync_dir(dir.path()).unwrap();
    f.write_all_at(b"late", 0).unwrap();
    disk.power_off();
    let flushed = f.sync_data();
    assert_eq!(flushed.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    assert!(fs::write(dir.path().join("new"), b"x").is_err());
    drop(f);
    disk.restore_power(1).unwrap();
    assert!(!dir.path().join("new").exists());
    // The write itself was never flushed: the cut kept it or not.
    let len = fs::metadata(&path).unwrap().len();
    assert!(len == 0 || len == 4, "{len}");
}
