//! Damage that is not a torn tail is refused, naming the file and offset;
//! damage that is a torn tail (nothing valid after it) is cut.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use spalloc_journal::{Error, Journal, Options, Reader};

fn corrupt_fields(e: Error) -> (std::path::PathBuf, u64) {
    match e {
        Error::Corrupt { file, offset, .. } => (file, offset),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Flips every bit position (one per byte, cycling the bit) in a one-segment
/// journal: in the header or any record but the last, open is refused and
/// names the file and the damaged frame's offset; in the last record, the
/// record is cut.
#[test]
fn every_bit_flip_in_last_segment_is_refused_or_cut_as_tail() {
    let t = TestDir::new("flip-last");
    let base = t.sub("base");
    {
        let mut j = Journal::open(&base).unwrap().journal;
        append(&mut j, 1, 4);
        append(&mut j, 5, 3);
    }
    let seg_name = segments(&base)[0].file_name().unwrap().to_owned();
    let offsets = frame_offsets(&segments(&base)[0]);
    let last_frame = offsets[offsets.len() - 2];
    let len = *offsets.last().unwrap();
    let work = t.sub("work");
    for i in 0..len {
        copy_dir(&base, &work);
        let seg = work.join(&seg_name);
        flip_bit(&seg, i, (i % 8) as u8);
        let before = dir_contents(&work);
        let result = Journal::open(&work);
        if i < 20 {
            let e = result.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Corrupt { .. }
                        | Error::UnknownVersion { .. }
                        | Error::UnknownFlags { .. }
                ),
                "byte {i}: {e:?}"
            );
            assert!(e.to_string().contains(&*seg_name.to_string_lossy()), "{e}");
        } else if i < last_frame {
            let e = result.unwrap_err();
            let msg = e.to_string();
            let (file, offset) = corrupt_fields(e);
            assert_eq!(file, seg, "byte {i}");
            let frame_start = *offsets.iter().rfind(|&&o| o <= i).unwrap();
            assert_eq!(offset as usize, frame_start, "byte {i}: {msg}");
            assert!(
                msg.contains(&*seg_name.to_string_lossy())
                    && msg.contains(&format!("offset {offset}")),
                "{msg}"
            );
            assert_eq!(
                dir_contents(&work),
                before,
                "a refused open modified files (byte {i})"
            );
            // The reader agrees: it reports the same spot.
            let report = Reader::open(&work).unwrap().verify().unwrap();
            let bad = report.first_bad.expect("verify finds the damage");
            assert_eq!((bad.file, bad.offset as usize), (seg.clone(), frame_start));
        } else {
            let opened = result.unwrap_or_else(|e| panic!("byte {i}: {e}"));
            assert_eq!(opened.records_after_snapshot, expected(1..=6), "byte {i}");
            let r = opened.repaired.expect("the cut is reported");
            assert_eq!((r.file, r.offset as usize), (seg.clone(), last_frame));
        }
    }
}

/// In a segment that is not the last, even the final record is acknowledged
/// data: damage there is refused, not cut.
#[test]
fn damage_at_end_of_non_last_segment_is_refused() {
    let t = TestDir::new("flip-nonlast");
    let dir = t.path();
    {
        let opts = Options {
            segment_bytes_max: 100,
            ..Options::default()
        };
        let mut j = Journal::open_with(dir, opts).unwrap().journal;
        for b in 0..6 {
            append(&mut j, 1 + b * 3, 3);
        }
    }
    let segs = segments(dir);
    assert!(segs.len() >= 3, "small segments force rotation");
    let offsets = frame_offsets(&segs[0]);
    let last_frame = offsets[offsets.len() - 2];
    flip_bit(&segs[0], last_frame + 9, 3);
    let e = Journal::open(dir).unwrap_err();
    let (file, offset) = corrupt_fields(e);
    assert_eq!((file, offset as usize), (segs[0].clone(), last_frame));
    // The reader yields the records before the damage, then the error.
    let reader = Reader::open(dir).unwrap();
    let mut it = reader.records_from(1).unwrap();
    let good: Vec<_> = it.by_ref().take_while(|r| r.is_ok()).collect();
    assert_eq!(good.len(), offsets.len() - 2);
    assert!(it.next().is_none(), "the iterator stops after an error");
    let bad = reader.verify().unwrap().first_bad.unwrap();
    assert_eq!(
        (bad.file, bad.offset as usize),
        (segs[0].clone(), last_frame)
    );
}

fn one_segment_journal(dir: &Path) -> std::path::PathBuf {
    let mut j = Journal::open(dir).unwrap().journal;
    append(&mut j, 1, 5);
    segments(dir)[0].clone()
}

fn append_bytes(file: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(file)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn garbage_zeros_and_absurd_lengths_after_valid_tail_are_cut() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0u8; 4096]),
        ("absurd-length", {
            let mut v = u32::MAX.to_le_bytes().to_vec();
            v.extend_from_slice(&[7u8; 30]);
            v
        }),
        ("just-over-max", {
            let mut v = ((16u32 << 20) + 1).to_le_bytes().to_vec();
            v.extend_from_slice(&[0u8; 12]);
            v
        }),
        (
            "garbage",
            (0..500u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, tail) in cases {
        let t = TestDir::new(&format!("tail-{name}"));
        let seg = one_segment_journal(t.path());
        let clean_len = fs::metadata(&seg).unwrap().len();
        append_bytes(&seg, &tail);
        assert_eq!(read_all(t.path(), 1), expected(1..=5), "{name}");
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(opened.records_after_snapshot, expected(1..=5), "{name}");
        let r = opened.repaired.expect(name);
        assert_eq!(
            (r.offset, r.bytes_cut),
            (clean_len, tail.len() as u64),
            "{name}"
        );
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            clean_len,
            "{name}: truncated"
        );
    }
}

#[test]
fn garbage_followed_by_a_valid_record_is_refused() {
    let t = TestDir::new("garbage-then-valid");
    let seg = one_segment_journal(t.path());
    let clean_len = fs::metadata(&seg).unwrap().len();
    let mut frame = vec![0xAB; 13];
    let payload = b"acknowledged";
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    append_bytes(&seg, &frame);
    let (file, offset) = corrupt_fields(Journal::open(t.path()).unwrap_err());
    assert_eq!((file, offset), (seg.clone(), clean_len));
    let reader = Reader::open(t.path()).unwrap();
    let got: Vec<_> = reader.records_from(1).unwrap().collect();
    assert_eq!(got.len(), 6, "five records, then the error");
    assert!(got[..5].iter().all(|r| r.is_ok()));
    let (file, offset) = corrupt_fields(got.into_iter().last().unwrap().unwrap_err());
    assert_eq!((file, offset), (seg.clone(), clean_len));
}

#[test]
fn segment_gap_is_refused() {
    let t = TestDir::new("gap");
    let dir = t.path();
    {
        let mut j = Journal::open_with(
            dir,
            Options {
                segment_bytes_max: 60,
                ..Options::default()
            },
        )
        .unwrap()
        .journal;
        for b in 0..6 {
            append(&mut j, 1 + b * 2, 2);
        }
    }
    let segs = segments(dir);
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).unwrap();
    let e = Journal::open(dir).unwrap_err();
    let msg = e.to_string();
    let (file, _) = corrupt_fields(e);
    assert_eq!(file, segs[0]);
    assert!(msg.contains("next segment"), "{msg}");
    let reader = Reader::open(dir).unwrap();
    assert!(reader.verify().unwrap().first_bad.is_some());
    assert!(reader.records_from(1).unwrap().any(|r| r.is_err()));
}

#[test]
fn unknown_segment_version_is_refused() {
    let t = TestDir::new("version");
    let seg = one_segment_journal(t.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    let e = Journal::open(t.path()).unwrap_err();
    let msg = e.to_string();
    match e {
        Error::UnknownVersion { file, version } => assert_eq!((file, version), (seg.clone(), 2)),
        other => panic!("{other:?}"),
    }
    assert!(
        msg.contains("version 2") && msg.contains(&*seg.to_string_lossy()),
        "{msg}"
    );
    assert!(matches!(
        Reader::open(t.path()),
        Err(Error::UnknownVersion { version: 2, .. })
    ));
}

#[test]
fn unknown_snapshot_version_is_refused() {
    let t = TestDir::new("snap-version");
    {
        let mut j = Journal::open(t.path()).unwrap().journal;
        append(&mut j, 1, 2);
        j.write_snapshot(2, b"state").unwrap();
    }
    let snap = snapshots(t.path())[0].clone();
    let mut bytes = fs::read(&snap).unwrap();
    bytes[4..6].copy_from_slice(&7u16.to_le_bytes());
    fs::write(&snap, &bytes).unwrap();
    match Journal::open(t.path()).unwrap_err() {
        Error::UnknownVersion { file, version } => assert_eq!((file, version), (snap, 7)),
        other => panic!("{other:?}"),
    }
}

/// R5: a last segment holding acknowledged records, later truncated into its
/// header or overwritten with zeros, is damage (segments are created whole
/// under a temporary name), never an interrupted creation: both the writer
/// and the reader refuse it, naming the file, and nothing is modified.
#[test]
fn short_or_zeroed_last_segment_is_refused_not_recreated() {
    let t = TestDir::new("short-last");
    let base = t.sub("base");
    {
        let mut j = Journal::open(&base).unwrap().journal;
        for i in 0..30 {
            append(&mut j, 1 + i, 1);
        }
    }
    let seg_name = segments(&base)[0].file_name().unwrap().to_owned();
    let full_len = fs::metadata(base.join(&seg_name)).unwrap().len();
    let work = t.sub("work");
    for damage in ["0", "1", "7", "10", "19", "zeros"] {
        copy_dir(&base, &work);
        let seg = work.join(&seg_name);
        if damage == "zeros" {
            fs::write(&seg, vec![0u8; full_len as usize]).unwrap();
        } else {
            OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(damage.parse().unwrap())
                .unwrap();
        }
        let before = dir_contents(&work);
        let e = Journal::open(&work).map(|_| ()).unwrap_err();
        let (file, _) = corrupt_fields(e);
        assert_eq!(file, seg, "{damage}");
        let e = Reader::open(&work).map(|_| ()).unwrap_err();
        assert!(
            e.to_string().contains("not an interrupted creation"),
            "{damage}: {e}"
        );
        assert_eq!(dir_contents(&work), before, "{damage}: files modified");
    }
}
