//! Helpers shared by the integration tests: scratch directories (the crate
//! may not depend on `tempfile`), directory copies for crash simulation, and
//! readers of a journal's full content.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use spalloc_journal::{Journal, Reader};

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path =
            std::env::temp_dir().join(format!("spalloc-journal-it-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A subdirectory path (not created).
    pub fn sub(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Replaces `to` with a copy of the files in `from` (flat: journals have no
/// subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Every file's name and bytes, sorted: to check that something did not
/// modify a directory.
pub fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The segment files, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_starting(dir, "segment-", ".log")
}

/// The snapshot files, oldest first.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_starting(dir, "snapshot-", ".snap")
}

fn files_starting(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    v.sort();
    v
}

/// A deterministic record payload for `seq`, 1 to 40 bytes long.
pub fn payload(seq: u64) -> Vec<u8> {
    let len = 1 + (seq * 7 % 40) as usize;
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// Appends records `from..from+count` (payloads from [`payload`]) as one batch.
pub fn append(j: &mut Journal, from: u64, count: u64) {
    let recs: Vec<Vec<u8>> = (from..from + count).map(payload).collect();
    let last = j.append_batch(recs.iter().map(|r| &r[..])).unwrap();
    assert_eq!(last, from + count - 1);
}

/// The expected `(seq, payload)` list for `range`.
pub fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|s| (s, payload(s))).collect()
}

/// All records from `from` through a fresh reader.
pub fn read_all(dir: &Path, from: u64) -> Vec<(u64, Vec<u8>)> {
    Reader::open(dir)
        .unwrap()
        .records_from(from)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Flips one bit of one byte of a file.
pub fn flip_bit(file: &Path, offset: usize, bit: u8) {
    let mut bytes = fs::read(file).unwrap();
    bytes[offset] ^= 1 << bit;
    fs::write(file, bytes).unwrap();
}

/// Start offsets of the frames in a segment, plus its end.
pub fn frame_offsets(file: &Path) -> Vec<usize> {
    let bytes = fs::read(file).unwrap();
    let mut offsets = vec![20];
    let mut pos = 20;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
        offsets.push(pos);
    }
    assert_eq!(pos, bytes.len(), "helper expects a clean segment");
    offsets
}
