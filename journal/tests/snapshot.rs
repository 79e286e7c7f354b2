//! Snapshots: crash at each step of writing one, fallback from a damaged
//! snapshot, and retention.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use spalloc_journal::{Error, Journal, Reader};

/// Records 1..=20; snapshot A at 6, snapshot B at 12 (after record 15), so
/// retention keeps both and every segment after A.
fn base_journal(dir: &Path) {
    let mut j = Journal::open(dir).unwrap().journal;
    append(&mut j, 1, 4);
    append(&mut j, 5, 6);
    j.write_snapshot(6, b"state at 6").unwrap();
    append(&mut j, 11, 5);
    j.write_snapshot(12, b"state at 12").unwrap();
    append(&mut j, 16, 5);
    assert_eq!(j.next_seq(), 21);
}

fn check_opens_to(dir: &Path, snapshot_seq: u64, data: &[u8]) {
    let opened = Journal::open(dir).unwrap();
    let snap = opened.snapshot.expect("a snapshot");
    assert_eq!((snap.covered_seq, &snap.data[..]), (snapshot_seq, data));
    assert_eq!(
        opened.records_after_snapshot,
        expected(snapshot_seq + 1..=20)
    );
    let mut j = opened.journal;
    append(&mut j, 21, 1);
    drop(j);
    let opened = Journal::open(dir).unwrap();
    assert_eq!(opened.snapshot.unwrap().covered_seq, snapshot_seq);
    assert_eq!(
        opened.records_after_snapshot,
        expected(snapshot_seq + 1..=21)
    );
    // And all retained history is readable.
    let reader = Reader::open(dir).unwrap();
    assert_eq!(
        read_all(dir, reader.first_seq()),
        expected(reader.first_seq()..=21)
    );
}

#[test]
fn crash_leaving_partial_temp_snapshot() {
    let t = TestDir::new("snap-partial-temp");
    base_journal(t.path());
    let tmp = t.path().join("snapshot-00000000000000000020.snap.tmp");
    fs::write(&tmp, b"SPAS\x01\x00half").unwrap();
    let seg_tmp = t.path().join("segment-00000000000000000021.log.tmp");
    fs::write(&seg_tmp, b"SPAJ").unwrap();
    assert_eq!(
        read_all(t.path(), 13),
        expected(13..=20),
        "readers ignore temp files"
    );
    check_opens_to(t.path(), 12, b"state at 12");
    assert!(
        !tmp.exists() && !seg_tmp.exists(),
        "the writer deletes stale temp files"
    );
}

#[test]
fn crash_after_snapshot_rename_before_rotation() {
    let t = TestDir::new("snap-no-rotation");
    let base = t.sub("base");
    base_journal(&base);
    // Write the real snapshot in a copy, then keep only the snapshot file:
    // the state just after the rename, before the new segment.
    let full = t.sub("full");
    copy_dir(&base, &full);
    Journal::open(&full)
        .unwrap()
        .journal
        .write_snapshot(20, b"state at 20")
        .unwrap();
    let name = "snapshot-00000000000000000020.snap";
    fs::copy(full.join(name), base.join(name)).unwrap();
    let opened = Journal::open(&base).unwrap();
    assert_eq!(opened.snapshot.unwrap().covered_seq, 20);
    assert!(opened.records_after_snapshot.is_empty());
    let mut j = opened.journal;
    append(&mut j, 21, 2);
    j.write_snapshot(22, b"state at 22").unwrap();
    drop(j);
    let opened = Journal::open(&base).unwrap();
    assert_eq!(opened.snapshot.unwrap().covered_seq, 22);
    assert_eq!(snapshots(&base).len(), 2, "retention keeps two");
    // Kept: snapshots 20 and 22, and the segment holding 16..=22 (records
    // after 20 are in it).
    let reader = Reader::open(&base).unwrap();
    assert_eq!(reader.first_seq(), 16);
    assert_eq!(read_all(&base, 16), expected(16..=22));
}

#[test]
fn truncated_newest_snapshot_falls_back_to_previous() {
    for cut in [0u64, 10, 31, 32, 40] {
        let t = TestDir::new(&format!("snap-truncated-{cut}"));
        base_journal(t.path());
        let mut j = Journal::open(t.path()).unwrap().journal;
        j.write_snapshot(20, b"state at 20, long enough to cut")
            .unwrap();
        drop(j);
        let snap = t.path().join("snapshot-00000000000000000020.snap");
        OpenOptions::new()
            .write(true)
            .open(&snap)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(opened.discarded_snapshots.len(), 1, "cut {cut}");
        assert_eq!(opened.discarded_snapshots[0].file, snap);
        drop(opened);
        assert!(!snap.exists(), "renamed aside");
        assert!(t
            .path()
            .join("snapshot-00000000000000000020.snap.corrupt")
            .exists());
        check_opens_to(t.path(), 12, b"state at 12");
    }
}

#[test]
fn two_damaged_snapshots_fall_back_to_the_oldest_kept() {
    let t = TestDir::new("snap-two-bad");
    base_journal(t.path());
    let snaps = snapshots(t.path());
    assert_eq!(snaps.len(), 2);
    flip_bit(&snaps[1], 40, 0);
    check_opens_to(t.path(), 6, b"state at 6");
}

#[test]
fn damaged_snapshot_without_its_records_is_refused() {
    let t = TestDir::new("snap-bad-no-records");
    {
        let mut j = Journal::open(t.path()).unwrap().journal;
        for i in 0..3 {
            append(&mut j, 1 + i * 5, 5);
            j.write_snapshot(5 + i * 5, format!("state {i}").as_bytes())
                .unwrap();
        }
    }
    // Retention removed segment 1; damage both kept snapshots.
    assert!(!t.path().join("segment-00000000000000000001.log").exists());
    for s in snapshots(t.path()) {
        flip_bit(&s, 33, 1);
    }
    fs::write(
        t.path().join("snapshot-00000000000000000020.snap.tmp"),
        b"partial",
    )
    .unwrap();
    let before = dir_contents(t.path());
    let e = Journal::open(t.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("no usable snapshot"), "{e}");
    assert_eq!(dir_contents(t.path()), before, "refusal modifies nothing");
    let report = Reader::open(t.path()).unwrap().verify().unwrap();
    assert_eq!(report.snapshots_ok, 0);
    assert!(report.first_bad.is_some());
}

#[test]
fn damaged_only_snapshot_replays_from_one() {
    let t = TestDir::new("snap-bad-from-one");
    {
        let mut j = Journal::open(t.path()).unwrap().journal;
        append(&mut j, 1, 5);
        j.write_snapshot(5, b"state").unwrap();
        append(&mut j, 6, 2);
    }
    flip_bit(&snapshots(t.path())[0], 35, 2);
    let opened = Journal::open(t.path()).unwrap();
    assert!(opened.snapshot.is_none());
    assert_eq!(opened.records_after_snapshot, expected(1..=7));
}

#[test]
fn snapshot_covering_less_than_all_records() {
    let t = TestDir::new("snap-partial-cover");
    {
        let mut j = Journal::open(t.path()).unwrap().journal;
        append(&mut j, 1, 10);
        j.write_snapshot(8, b"state at 8").unwrap();
        append(&mut j, 11, 1);
    }
    let opened = Journal::open(t.path()).unwrap();
    assert_eq!(opened.snapshot.unwrap().covered_seq, 8);
    assert_eq!(opened.records_after_snapshot, expected(9..=11));
}

#[test]
fn snapshot_beyond_last_record_is_refused() {
    let t = TestDir::new("snap-beyond");
    {
        let mut j = Journal::open(t.path()).unwrap().journal;
        append(&mut j, 1, 5);
        j.write_snapshot(5, b"state").unwrap();
    }
    // Losing the records a snapshot covers is not a torn tail.
    let segs = segments(t.path());
    let len = fs::metadata(&segs[0]).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    fs::remove_file(&segs[1]).unwrap();
    let e = Journal::open(t.path()).unwrap_err();
    assert!(e.to_string().contains("records are missing"), "{e}");
}

#[test]
fn retention_bounds_files_and_reader_reads_all_retained_history() {
    let t = TestDir::new("retention");
    let dir = t.path();
    let mut j = Journal::open(dir).unwrap().journal;
    for round in 0..10u64 {
        append(&mut j, 1 + round * 10, 10);
        j.write_snapshot(10 + round * 10, format!("state {round}").as_bytes())
            .unwrap();
        assert!(snapshots(dir).len() <= 2);
        assert!(
            segments(dir).len() <= 3,
            "round {round}: {:?}",
            segments(dir)
        );
    }
    append(&mut j, 101, 3);
    drop(j);
    // Kept: snapshots at 90 and 100, and the segments with records after 90.
    let reader = Reader::open(dir).unwrap();
    let kept: Vec<u64> = reader.snapshots().iter().map(|s| s.covered_seq).collect();
    assert_eq!(kept, vec![90, 100]);
    assert_eq!(reader.first_seq(), 91);
    assert_eq!(reader.last_seq(), 103);
    assert_eq!(read_all(dir, 91), expected(91..=103));
    assert_eq!(read_all(dir, 102), expected(102..=103));
    assert!(read_all(dir, 104).is_empty());
    match reader.records_from(50) {
        Err(Error::NotRetained {
            seq: 50,
            first_seq: 91,
        }) => {}
        other => panic!("{other:?}"),
    }
    let older = reader.read_snapshot(&reader.snapshots()[0]).unwrap();
    assert_eq!(older.data, b"state 8");
    let report = reader.verify().unwrap();
    assert_eq!((report.first_bad, report.torn_tail), (None, None));
    assert_eq!((report.records, report.snapshots_ok), (13, 2));
    let opened = Journal::open(dir).unwrap();
    assert_eq!(opened.snapshot.unwrap().covered_seq, 100);
    assert_eq!(opened.records_after_snapshot, expected(101..=103));
}

/// R21: damage in what is kept only as the fallback for a damaged newest
/// snapshot (the older segment and the older snapshot) does not stop an open
/// that does not need it, but it is reported, so the server can warn that
/// the fallback is gone. `verify` reports the same spot.
#[test]
fn damage_in_the_fallback_is_reported_not_refused() {
    let t = TestDir::new("fallback-damage");
    let base = t.sub("base");
    base_journal(&base);
    let segs = segments(&base);
    assert_eq!(segs.len(), 3, "{segs:?}");
    let clean = Journal::open(&base).unwrap();
    assert!(
        clean.fallback_damage.is_empty(),
        "{:?}",
        clean.fallback_damage
    );
    drop(clean);

    // A record in the segment that only the older snapshot (6) needs (records 1..=10;
    // the newest snapshot, 12, replays from the second segment, 11..=15).
    let work = t.sub("work-segment");
    copy_dir(&base, &work);
    let older_segment = work.join(segs[0].file_name().unwrap());
    let offsets = frame_offsets(&older_segment);
    flip_bit(&older_segment, offsets[1] + 9, 3); // inside the second record's payload
    let opened = Journal::open(&work).unwrap();
    assert_eq!(opened.snapshot.as_ref().unwrap().covered_seq, 12);
    assert_eq!(opened.records_after_snapshot, expected(13..=20));
    assert_eq!(
        opened.fallback_damage.len(),
        1,
        "{:?}",
        opened.fallback_damage
    );
    let p = &opened.fallback_damage[0];
    assert_eq!((&p.file, p.offset as usize), (&older_segment, offsets[1]));
    drop(opened);
    let report = Reader::open(&work).unwrap().verify().unwrap();
    let bad = report.first_bad.expect("verify finds it too");
    assert_eq!((bad.file, bad.offset as usize), (older_segment, offsets[1]));

    // The older snapshot itself.
    let work = t.sub("work-snapshot");
    copy_dir(&base, &work);
    let older_snapshot = snapshots(&work)[0].clone();
    flip_bit(&older_snapshot, 30, 0);
    let opened = Journal::open(&work).unwrap();
    assert_eq!(opened.snapshot.as_ref().unwrap().covered_seq, 12);
    assert_eq!(
        opened.fallback_damage.len(),
        1,
        "{:?}",
        opened.fallback_damage
    );
    assert_eq!(opened.fallback_damage[0].file, older_snapshot);
    // Reported, not renamed: it is not in the way of anything.
    assert!(older_snapshot.exists());
}
