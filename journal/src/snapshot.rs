//! Snapshot files: the serialised core state as of some record, so that a
//! restart folds only the records after it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::files::create_atomically;
use crate::format::{decode_snapshot, encode_snapshot_header, snapshot_file_name};
use crate::Error;

/// A snapshot's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state includes every record with `seq <= covered_seq`.
    pub covered_seq: u64,
    /// The serialised state, opaque to the journal.
    pub data: Vec<u8>,
}

/// A snapshot file found in the directory (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The covered sequence number, from the file name.
    pub covered_seq: u64,
    /// The file size in bytes, header included.
    pub size_bytes: u64,
    /// The file.
    pub file: PathBuf,
}

/// Reads and checks the snapshot file at `path`, whose name says it covers
/// `covered_seq`.
pub fn read_snapshot_file(path: &Path, covered_seq: u64) -> Result<Snapshot, Error> {
    let mut buf = fs::read(path).map_err(Error::io(path))?;
    let (seq, data) = decode_snapshot(&buf, path)?;
    if seq != covered_seq {
        return Err(Error::corrupt(
            path,
            8,
            format!("snapshot header covers seq {seq}, but its file name says {covered_seq}"),
        ));
    }
    // Reuse the file buffer for the data rather than copying it: snapshots
    // can be large.
    buf.drain(..data.start);
    debug_assert_eq!(buf.len(), data.len());
    Ok(Snapshot {
        covered_seq,
        data: buf,
    })
}

/// Writes a snapshot file crash-safely (temp, fsync, rename, fsync dir).
/// Returns its path.
pub fn write_snapshot_file(dir: &Path, covered_seq: u64, data: &[u8]) -> Result<PathBuf, Error> {
    let path = dir.join(snapshot_file_name(covered_seq));
    let header = encode_snapshot_header(covered_seq, data);
    let (_file, dir_synced) = create_atomically(dir, &path, &[&header, data])?;
    // A snapshot is only a shortcut over records that are already durable,
    // so a failed directory fsync just means it may not survive a crash; the
    // caller still learns of it, because retention must not trust it then.
    dir_synced?;
    Ok(path)
}
