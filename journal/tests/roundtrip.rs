//! Property: any sequence of batches (and snapshots, and segment sizes)
//! reads back identically through `Journal::open` and through `Reader`.

mod common;

use common::TestDir;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use spalloc_journal::{Journal, Options, Reader};

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Step {
    /// Append these records as one batch (records are made non-empty).
    Batch(Vec<Vec<u8>>),
    /// Snapshot covering all records so far.
    Snapshot,
    /// Close and reopen the writer.
    Reopen,
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Step {
        match u8::arbitrary(g) % 8 {
            0 => Step::Snapshot,
            1 => Step::Reopen,
            _ => Step::Batch(
                Vec::<Vec<u8>>::arbitrary(g)
                    .into_iter()
                    .map(|mut r| {
                        r.push(0xEE); // records are never empty
                        r
                    })
                    .collect(),
            ),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Step>> {
        match self {
            Step::Batch(b) => Box::new(
                b.shrink()
                    .map(|b| Step::Batch(b.into_iter().filter(|r| !r.is_empty()).collect())),
            ),
            _ => Box::new(std::iter::empty()),
        }
    }
}

fn round_trip(steps: Vec<Step>, segment_bytes_max: u16) -> bool {
    let t = TestDir::new("quickcheck");
    let dir = t.sub("j");
    let opts = Options {
        segment_bytes_max: 64 + u64::from(segment_bytes_max % 2048),
        ..Options::default()
    };
    let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut snapshot_seq = None;
    let mut j = Journal::open_with(&dir, opts.clone()).unwrap().journal;
    for step in steps {
        match step {
            Step::Batch(records) => {
                let last = j.append_batch(records.iter().map(|r| &r[..])).unwrap();
                for r in records {
                    all.push((all.len() as u64 + 1, r));
                }
                assert_eq!(last, all.len() as u64);
            }
            Step::Snapshot => {
                let seq = all.len() as u64;
                j.write_snapshot(seq, &seq.to_le_bytes()).unwrap();
                snapshot_seq = Some(seq);
            }
            Step::Reopen => {
                drop(j);
                j = Journal::open_with(&dir, opts.clone()).unwrap().journal;
            }
        }
    }
    assert_eq!(j.next_seq(), all.len() as u64 + 1);
    drop(j);

    let opened = Journal::open_with(&dir, opts).unwrap();
    assert!(opened.repaired.is_none());
    let snap = opened
        .snapshot
        .as_ref()
        .map(|s| (s.covered_seq, s.data.clone()));
    assert_eq!(snap, snapshot_seq.map(|s| (s, s.to_le_bytes().to_vec())));
    let after = snapshot_seq.unwrap_or(0) as usize;
    assert_eq!(opened.records_after_snapshot, all[after..]);
    drop(opened);

    let reader = Reader::open(&dir).unwrap();
    assert_eq!(reader.last_seq(), all.len() as u64);
    let first = reader.first_seq() as usize;
    assert!(
        first <= after + 1,
        "records after the snapshot are retained"
    );
    let read: Vec<_> = reader
        .records_from(first as u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read, all[first - 1..]);
    let report = reader.verify().unwrap();
    assert_eq!((report.first_bad, report.torn_tail), (None, None));
    true
}

#[test]
fn any_batches_read_back_identically() {
    QuickCheck::new()
        .tests(60)
        .rng(Gen::new(20))
        .quickcheck(round_trip as fn(Vec<Step>, u16) -> bool);
}
