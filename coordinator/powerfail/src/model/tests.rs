use super::*;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn file(m: &mut Model, n: &str) -> u64 {
    m.create(ROOT, name(n), Kind::File, 0o644).unwrap().ino
}

fn contents(m: &Model, n: &str) -> Option<Vec<u8>> {
    let ino = m.lookup(ROOT, name(n)).ok()?.ino;
    Some(m.read(ino, 0, usize::MAX).unwrap().to_vec())
}

#[test]
fn what_was_fsynced_survives_every_cut() {
    for seed in 0..50 {
        let mut m = Model::new();
        let f = file(&mut m, "wal");
        m.fsync_dir(ROOT).unwrap();
        m.write(f, 0, b"durable").unwrap();
        m.fsync(f).unwrap();
        m.write(f, 7, &[b'x'; 4096]).unwrap();
        m.cut_power(seed);
        let after = contents(&m, "wal").expect("a durable name survives");
        assert_eq!(&after[..7], b"durable", "seed {seed}");
        // Whatever survived of the unsynced write is some sectors of it.
        assert!(after[7..].iter().all(|&b| b == b'x'), "seed {seed}");
        assert_eq!((after.len() - 7) % SECTOR, 0, "seed {seed}");
    }
}

#[test]
fn unsynced_writes_are_lost_or_torn_on_some_cuts_and_kept_on_others() {
    let mut lost = 0;
    let mut torn = 0;
    let mut kept = 0;
    for seed in 0..100 {
        let mut m = Model::new();
        let f = file(&mut m, "wal");
        m.fsync(f).unwrap();
        m.fsync_dir(ROOT).unwrap();
        m.write(f, 0, &[7; 4 * SECTOR]).unwrap();
        let report = m.cut_power(seed);
        match contents(&m, "wal").unwrap().len() {
            0 => lost += 1,
            n if n == 4 * SECTOR => kept += 1,
            _ => torn += 1,
        }
        assert_eq!(
            report.writes_kept + report.writes_torn + report.writes_lost,
            1
        );
    }
    assert!(lost > 0 && torn > 0 && kept > 0, "{lost} {torn} {kept}");
}

#[test]
fn a_new_name_is_lost_without_its_directorys_fsync_even_if_the_file_was_fsynced() {
    let mut m = Model::new();
    let f = file(&mut m, "segment");
    m.write(f, 0, b"records").unwrap();
    m.fsync(f).unwrap();
    let report = m.cut_power(1);
    assert_eq!(contents(&m, "segment"), None);
    assert_eq!(report.inodes_lost, 1);
    assert_eq!(report.dirs_reverted, 1);
}

#[test]
fn a_rename_is_undone_without_its_directorys_fsync_and_kept_with_it() {
    for synced in [false, true] {
        let mut m = Model::new();
        let old = file(&mut m, "snapshot");
        m.write(old, 0, b"old").unwrap();
        m.fsync(old).unwrap();
        let tmp = file(&mut m, "snapshot.tmp");
        m.write(tmp, 0, b"new").unwrap();
        m.fsync(tmp).unwrap();
        m.fsync_dir(ROOT).unwrap();
        m.rename(
            (ROOT, name("snapshot.tmp")),
            (ROOT, name("snapshot")),
            false,
        )
        .unwrap();
        assert_eq!(contents(&m, "snapshot").unwrap(), b"new");
        if synced {
            m.fsync_dir(ROOT).unwrap();
        }
        m.cut_power(3);
        let expected: &[u8] = if synced { b"new" } else { b"old" };
        assert_eq!(contents(&m, "snapshot").unwrap(), expected);
        assert_eq!(contents(&m, "snapshot.tmp").is_some(), !synced);
    }
}

#[test]
fn an_unlink_is_undone_without_its_directorys_fsync() {
    let mut m = Model::new();
    let f = file(&mut m, "old-segment");
    m.write(f, 0, b"kept").unwrap();
    m.fsync(f).unwrap();
    m.fsync_dir(ROOT).unwrap();
    m.remove(ROOT, name("old-segment"), false).unwrap();
    assert_eq!(contents(&m, "old-segment"), None);
    m.cut_power(0);
    assert_eq!(contents(&m, "old-segment").unwrap(), b"kept");
}

#[test]
fn a_cut_size_is_durable_only_once_fsynced() {
    let mut m = Model::new();
    let f = file(&mut m, "wal");
    m.fsync_dir(ROOT).unwrap();
    m.write(f, 0, &[1; 100]).unwrap();
    m.fsync(f).unwrap();
    m.set_len(f, 10).unwrap();
    m.fsync(f).unwrap();
    m.cut_power(9);
    assert_eq!(contents(&m, "wal").unwrap(), vec![1; 10]);
}

#[test]
fn the_same_seed_cuts_the_same_way() {
    let run = |seed| {
        let mut m = Model::new();
        let f = file(&mut m, "wal");
        m.fsync_dir(ROOT).unwrap();
        for i in 0..20u8 {
            m.write(f, u64::from(i) * 1000, &[i; 1000]).unwrap();
        }
        (m.cut_power(seed), contents(&m, "wal"))
    };
    assert_eq!(run(42), run(42));
}

#[test]
fn directories_refuse_what_posix_refuses() {
    let mut m = Model::new();
    let d = m.create(ROOT, name("d"), Kind::Dir, 0o755).unwrap().ino;
    m.create(d, name("f"), Kind::File, 0o644).unwrap();
    assert_eq!(m.remove(ROOT, name("d"), true), Err(FsError::NotEmpty));
    assert_eq!(m.remove(ROOT, name("d"), false), Err(FsError::IsDir));
    assert_eq!(
        m.create(ROOT, name("d"), Kind::File, 0o644),
        Err(FsError::Exists)
    );
    assert_eq!(m.write(d, 0, b"x"), Err(FsError::IsDir));
    file(&mut m, "g");
    assert_eq!(
        m.rename((ROOT, name("g")), (ROOT, name("d")), false),
        Err(FsError::IsDir)
    );
    assert_eq!(
        m.rename((ROOT, name("g")), (ROOT, name("d")), true),
        Err(FsError::Exists)
    );
}
