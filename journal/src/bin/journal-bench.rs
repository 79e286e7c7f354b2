//! Journal benchmark: append rate with one fsync per batch, replay rate, and
//! open time of a one-million-record journal with and without a recent
//! snapshot. Run in release:
//!
//! ```text
//! cargo run --release -p spalloc-journal --bin journal-bench -- [dir]
//! ```
//!
//! `dir` (default: a fresh directory under the system temp dir) is deleted
//! first and afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spalloc_journal::{Journal, Reader};

/// Size of each benchmark record, like a small MessagePack event.
const RECORD_BYTES: usize = 100;
/// Records in the replay and open benchmarks.
const REPLAY_RECORDS: u64 = 1_000_000;
/// How long each append benchmark runs.
const APPEND_DURATION: Duration = Duration::from_secs(3);

fn record(seq: u64) -> Vec<u8> {
    let mut r = vec![0u8; RECORD_BYTES];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn bench_append(dir: &Path, batch: usize) {
    fresh(dir);
    let mut j = Journal::open(dir).expect("open").journal;
    let records: Vec<Vec<u8>> = (0..batch as u64).map(record).collect();
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < APPEND_DURATION {
        j.append_batch(records.iter().map(|r| &r[..]))
            .expect("append");
        batches += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "append batch={batch:>3}: {:>9.0} records/s, {:>7.0} commits/s, {:>6.3} ms/commit",
        (batches * batch as u64) as f64 / secs,
        batches as f64 / secs,
        secs * 1e3 / batches as f64
    );
}

fn main() {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("journal-bench-{}", std::process::id()))
        });
    println!("journal dir: {}", dir.display());

    for batch in [1, 10, 100] {
        bench_append(&dir, batch);
    }

    // One million records, in batches of 1000 so that building it is quick.
    fresh(&dir);
    let start = Instant::now();
    {
        let mut j = Journal::open(&dir).expect("open").journal;
        let mut seq = 1;
        while seq <= REPLAY_RECORDS {
            let batch: Vec<Vec<u8>> = (seq..seq + 1000).map(record).collect();
            j.append_batch(batch.iter().map(|r| &r[..]))
                .expect("append");
            seq += 1000;
        }
    }
    println!(
        "wrote {REPLAY_RECORDS} records in batches of 1000: {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let reader = Reader::open(&dir).expect("reader");
    let mut count = 0u64;
    let mut bytes = 0usize;
    for r in reader.records_from(1).expect("records") {
        let (_, payload) = r.expect("record");
        count += 1;
        bytes += payload.len();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count, REPLAY_RECORDS);
    println!(
        "replay via Reader: {count} records in {secs:.3} s = {:.0} records/s ({:.0} MB/s payload)",
        count as f64 / secs,
        bytes as f64 / secs / 1e6
    );

    let start = Instant::now();
    let opened = Journal::open(&dir).expect("open");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(opened.records_after_snapshot.len() as u64, REPLAY_RECORDS);
    println!(
        "Journal::open, 1M records, no snapshot: {secs:.3} s ({:.0} records/s)",
        REPLAY_RECORDS as f64 / secs
    );

    // A recent snapshot (1 MiB of state) with 1000 records after it.
    let mut j = opened.journal;
    drop(opened.records_after_snapshot);
    j.write_snapshot(REPLAY_RECORDS, &vec![7u8; 1 << 20])
        .expect("snapshot");
    let batch: Vec<Vec<u8>> = (REPLAY_RECORDS + 1..=REPLAY_RECORDS + 1000)
        .map(record)
        .collect();
    j.append_batch(batch.iter().map(|r| &r[..]))
        .expect("append");
    drop(j);
    let start = Instant::now();
    let opened = Journal::open(&dir).expect("open");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(opened.records_after_snapshot.len(), 1000);
    println!(
        "Journal::open, 1M records, 1 MiB snapshot at 1M, 1000 records after it: {:.1} ms",
        secs * 1e3
    );
    drop(opened);
    fresh(&dir);
}
