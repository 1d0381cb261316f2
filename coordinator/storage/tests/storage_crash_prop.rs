//! Property: after any sequence of appends and a crash that cuts the last
//! segment at any byte (or leaves zeros from any byte on, as in preallocated
//! space the writes never reached), or a power cut during the last group
//! commit's fdatasync that saved any subset of that group's bytes, recovery
//! returns exactly the records that were wholly written before the first
//! damage: never a partial record, never a refusal, and every acknowledged
//! record whenever the crash only hit bytes written after the
//! acknowledgement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test failure should stop loudly

mod storage_common;

use std::fs;

use paxlock_storage::record::frame_len_bytes;
use paxlock_storage::segment::SEGMENT_HEADER_BYTES;
use paxlock_storage::{FileStore, FileStoreOptions, Lsn, Storage};
use proptest::prelude::*;
use storage_common::*;

/// Batches of payload lengths.
fn batches() -> impl Strategy<Value = Vec<Vec<usize>>> {
    proptest::collection::vec(proptest::collection::vec(0usize..200, 1..4), 1..12)
}

fn append_batches(store: &FileStore, batches: &[Vec<usize>], all: &mut Vec<Vec<u8>>) {
    for batch in batches {
        let payloads: Vec<Vec<u8>> = batch
            .iter()
            .map(|len| {
                let seed = all.len() as u8;
                all.push((0..*len).map(|i| seed.wrapping_add(i as u8)).collect());
                all[all.len() - 1].clone()
            })
            .collect();
        append_group(store, &payloads);
    }
}

/// How the machine went down.
#[derive(Clone, Debug)]
enum Crash {
    /// The last segment ends at (or holds only zeros from) a point
    /// `at_permille` of the way through the bytes it may lose.
    Cut {
        at_permille: u64,
        only_in_flight_bytes: bool,
        zero_from_cut: bool,
    },
    /// Power failed during the last group's fdatasync: of its bytes, in
    /// 64-byte units, those marked `true` never reached the disk (they read
    /// as the zeros preallocated there). Finer than any real sector, so it
    /// covers every order a disk may save pages in.
    PowerCut { lost_units: Vec<bool> },
}

/// Bytes per unit a power cut saves or loses.
const UNIT_BYTES: usize = 64;

fn crashes() -> impl Strategy<Value = Crash> {
    prop_oneof![
        (0u64..=1000, any::<bool>(), any::<bool>()).prop_map(
            |(at_permille, only_in_flight_bytes, zero_from_cut)| Crash::Cut {
                at_permille,
                only_in_flight_bytes,
                zero_from_cut,
            }
        ),
        proptest::collection::vec(any::<bool>(), 1..24)
            .prop_map(|lost_units| Crash::PowerCut { lost_units }),
    ]
}

fn first_lsn_of(segment: &[u8]) -> u64 {
    u64::from_le_bytes(segment[16..24].try_into().expect("8 bytes"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn crash_at_any_byte_recovers_exactly_the_whole_records(
        rounds in proptest::collection::vec(
            (batches(), batches(), crashes()),
            1..4,
        ),
        segment_limit_bytes in prop_oneof![Just(256u64), Just(1024), Just(1 << 20)],
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = FileStoreOptions { segment_size_limit_bytes: segment_limit_bytes, ..FileStoreOptions::default() };
        // The model: exactly the records the log must hold, LSN = index + 1.
        let mut all: Vec<Vec<u8>> = Vec::new();
        let (mut store, _) = open(tmp.path(), options).expect("open");
        for (acked, in_flight, crash) in rounds {
            append_batches(&store, &acked, &mut all);
            let acked_count = all.len();
            let acked_segment = segments(tmp.path()).pop().expect("segment");
            let acked_len = records_end(&acked_segment);
            // The "in flight" records reach the disk, but the crash is
            // modelled as happening before they were acknowledged. The last
            // batch is one group commit; where it starts in the last segment:
            let (in_flight_earlier, last_group) = in_flight.split_at(in_flight.len() - 1);
            append_batches(&store, in_flight_earlier, &mut all);
            let synced_count = all.len();
            let before_last_group = segments(tmp.path()).pop().expect("segment");
            let last_group_start = records_end(&before_last_group);
            append_batches(&store, last_group, &mut all);
            drop(store);

            let last = segments(tmp.path()).pop().expect("segment");
            let bytes = fs::read(&last).expect("read");
            let len = bytes.len() as u64;
            let mut crashed = bytes.clone();
            match &crash {
                Crash::Cut { at_permille, only_in_flight_bytes, zero_from_cut } => {
                    let low = if *only_in_flight_bytes && last == acked_segment { acked_len } else { SEGMENT_HEADER_BYTES as u64 };
                    let cut = (low + (len - low) * at_permille / 1000) as usize;
                    if *zero_from_cut {
                        crashed[cut..].fill(0);
                    } else {
                        crashed.truncate(cut);
                    }
                }
                Crash::PowerCut { lost_units } => {
                    // A group that rolled into a new segment starts there
                    // (the writer synced the segment before it).
                    let start = if last == before_last_group { last_group_start as usize } else { SEGMENT_HEADER_BYTES };
                    let end = records_end(&last) as usize;
                    for (unit, lost) in (start..end).step_by(UNIT_BYTES).zip(lost_units.iter().cycle()) {
                        if *lost {
                            crashed[unit..(unit + UNIT_BYTES).min(end)].fill(0);
                        }
                    }
                }
            }
            fs::write(&last, &crashed).expect("write");
            // What the crash cannot have touched.
            let must_survive = match crash {
                Crash::Cut { only_in_flight_bytes: true, .. } => acked_count,
                Crash::Cut { only_in_flight_bytes: false, .. } => 0,
                Crash::PowerCut { .. } => synced_count,
            };

            // Expected: every record before the last segment, plus the
            // leading frames of the last segment the crash left intact (a
            // frame is intact if all of it survived: zeroing may leave one
            // whole when the bytes it zeroed were zero already, as padding is).
            let first_in_last = first_lsn_of(&bytes) as usize;
            let mut start = SEGMENT_HEADER_BYTES;
            let mut expected_count = first_in_last - 1;
            let mut first_damaged = None;
            for payload in &all[first_in_last - 1..] {
                let end = start + frame_len_bytes(payload.len());
                let intact = crashed.get(start..end) == Some(&bytes[start..end]);
                if first_damaged.is_none() {
                    if intact {
                        expected_count += 1;
                    } else {
                        first_damaged = Some(start);
                    }
                }
                start = end;
            }
            // Torn: something other than zeros is left where the first
            // damaged frame starts (or after the last frame).
            let first_damaged = first_damaged.unwrap_or(start);
            let cut_a_record = crashed.get(first_damaged..).is_some_and(|rest| rest.iter().any(|b| *b != 0));

            let (reopened, recovered) = open(tmp.path(), options).expect("a crash is never fatal");
            let got: Vec<Vec<u8>> = recovered.records.iter().map(|r| r.payload.clone()).collect();
            prop_assert_eq!(&got[..], &all[..expected_count]);
            let lsns_contiguous = recovered.records.iter().enumerate().all(|(i, r)| r.lsn == Lsn(i as u64 + 1));
            prop_assert!(lsns_contiguous);
            prop_assert_eq!(recovered.torn_tail.is_some(), cut_a_record);
            prop_assert!(got.len() >= must_survive, "lost an acknowledged record");
            all.truncate(expected_count);

            // The log continues cleanly after the repair.
            let next = reopened.append(2, b"after crash").expect("queue").wait().expect("durable");
            all.push(b"after crash".to_vec());
            prop_assert_eq!(next, Lsn(all.len() as u64));
            store = reopened;
        }
        drop(store);
        let (_, last_view) = open(tmp.path(), options).expect("reopen");
        prop_assert!(last_view.torn_tail.is_none());
        let got: Vec<Vec<u8>> = last_view.records.into_iter().map(|r| r.payload).collect();
        prop_assert_eq!(got, all);
    }

    #[test]
    fn a_single_bit_flip_never_yields_a_record_that_was_not_written(
        lens in proptest::collection::vec(0usize..120, 1..30),
        file_pick in any::<prop::sample::Index>(),
        byte_pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, _) = open(tmp.path(), small_segments()).expect("open");
        let mut all = Vec::new();
        append_batches(&store, &lens.iter().map(|l| vec![*l]).collect::<Vec<_>>(), &mut all);
        drop(store);
        let files = segments(tmp.path());
        let file = &files[file_pick.index(files.len())];
        let size = fs::metadata(file).expect("meta").len() as usize;
        flip_bit(file, byte_pick.index(size), bit);
        match open(tmp.path(), small_segments()) {
            // Either the flip hit padding, or it hit the tail of the last
            // segment: what comes back is a prefix of what was written.
            Ok((_, recovered)) => {
                let got: Vec<Vec<u8>> = recovered.records.into_iter().map(|r| r.payload).collect();
                prop_assert!(got.len() <= all.len());
                prop_assert_eq!(&got[..], &all[..got.len()]);
                if recovered.torn_tail.is_some() {
                    prop_assert_eq!(file, files.last().expect("last"));
                }
            }
            Err(e) => prop_assert!(e.is_corruption(), "unexpected error kind: {}", e),
        }
    }
}
