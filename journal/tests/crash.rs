//! Crash simulation: the last segment cut at every possible length past its
//! header opens to exactly the records that were complete, and appending
//! continues; cut inside its header, it is refused (R5).

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use spalloc_journal::{Journal, Reader};

/// Cuts the last segment of a copy of `base` at every length and checks
/// recovery. `first_seq_in_last` is the first seq of the last segment,
/// `snapshot_seq` the snapshot expected on open (records after it are
/// replayed; records before the last segment are all complete).
fn cut_everywhere(t: &TestDir, base: &Path, snapshot_seq: Option<u64>) {
    let last_segment = segments(base).pop().unwrap();
    let name = last_segment.file_name().unwrap().to_owned();
    let first_in_last: u64 = name.to_str().unwrap()[8..28].parse().unwrap();
    let offsets = frame_offsets(&last_segment);
    let full_len = fs::metadata(&last_segment).unwrap().len() as usize;
    let replay_from = snapshot_seq.map_or(1, |s| s + 1);
    let work = t.sub("work");
    for cut in 0..=full_len {
        copy_dir(base, &work);
        let seg = work.join(&name);
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        // Complete frames: those whose end is within the cut.
        let complete = offsets[1..].iter().filter(|&&end| end <= cut).count() as u64;
        let last_complete = first_in_last + complete - 1;
        let at_boundary = offsets.contains(&cut);

        let before = dir_contents(&work);
        if cut < 20 {
            // Inside the header: segments are created whole under a temporary name, so a
            // short header under the final name is damage, never a crash (R5): refused by
            // both, and nothing is modified.
            for refused in [
                Reader::open(&work).map(|_| ()),
                Journal::open(&work).map(|_| ()),
            ] {
                match refused {
                    Err(spalloc_journal::Error::Corrupt { file, what, .. }) => {
                        assert_eq!(file, seg, "cut {cut}");
                        assert!(
                            what.contains("not an interrupted creation"),
                            "cut {cut}: {what}"
                        );
                    }
                    other => panic!("cut {cut}: a short last segment was accepted: {other:?}"),
                }
            }
            assert_eq!(dir_contents(&work), before, "files modified at cut {cut}");
            continue;
        }
        // A reader sees the complete records and modifies nothing.
        let reader = Reader::open(&work).unwrap();
        assert_eq!(reader.last_seq(), last_complete, "cut {cut}");
        let from = reader.first_seq();
        assert_eq!(
            read_all(&work, from),
            expected(from..=last_complete),
            "cut {cut}"
        );
        let report = reader.verify().unwrap();
        assert_eq!(report.first_bad, None, "cut {cut}");
        assert_eq!(report.torn_tail.is_some(), !at_boundary, "cut {cut}");
        assert_eq!(
            dir_contents(&work),
            before,
            "the reader modified files at cut {cut}"
        );

        // The writer cuts the tail and replays what was complete.
        let opened = Journal::open(&work).unwrap();
        assert_eq!(
            opened.snapshot.as_ref().map(|s| s.covered_seq),
            snapshot_seq
        );
        assert_eq!(
            opened.records_after_snapshot,
            expected(replay_from..=last_complete),
            "cut {cut}"
        );
        match &opened.repaired {
            None => assert!(at_boundary, "cut {cut} not reported"),
            Some(r) => {
                assert!(!at_boundary, "clean cut {cut} reported as {r:?}");
                assert_eq!(r.file, seg);
                assert_eq!(r.offset as usize, offsets[complete as usize], "cut {cut}");
                assert_eq!(r.offset + r.bytes_cut, cut as u64, "cut {cut}");
            }
        }
        let mut j = opened.journal;
        assert_eq!(j.next_seq(), last_complete + 1);
        let extra = payload(last_complete + 1);
        assert_eq!(j.append_batch([&extra[..]]).unwrap(), last_complete + 1);
        drop(j);
        let reopened = Journal::open(&work).unwrap();
        assert!(reopened.repaired.is_none());
        assert_eq!(
            reopened.records_after_snapshot,
            expected(replay_from..=last_complete + 1),
            "cut {cut}"
        );
    }
}

#[test]
fn cut_single_segment_at_every_length() {
    let t = TestDir::new("cut-single");
    let base = t.sub("base");
    {
        let mut j = Journal::open(&base).unwrap().journal;
        append(&mut j, 1, 3);
        append(&mut j, 4, 1);
        append(&mut j, 5, 4);
    }
    cut_everywhere(&t, &base, None);
}

#[test]
fn cut_after_snapshot_and_rotation_at_every_length() {
    let t = TestDir::new("cut-rotated");
    let base = t.sub("base");
    {
        let mut j = Journal::open(&base).unwrap().journal;
        append(&mut j, 1, 3);
        append(&mut j, 4, 2);
        j.write_snapshot(5, b"state at 5").unwrap();
        append(&mut j, 6, 4);
        append(&mut j, 10, 1);
        append(&mut j, 11, 3);
    }
    assert_eq!(
        segments(&base).len(),
        2,
        "the snapshot starts a new segment"
    );
    cut_everywhere(&t, &base, Some(5));
}
