//! The on-disk format: file names, segment and snapshot headers, and record
//! frames. Everything here is pure byte manipulation (no I/O) so that the
//! writer, the reader and `verify` share exactly one definition of what a
//! valid file looks like.
//!
//! All integers are little-endian.
//!
//! Segment file `segment-<first_seq:020>.log`:
//!
//! ```text
//! offset size field
//!      0    4 magic "SPAJ"
//!      4    2 version (1)
//!      6    2 flags (0; any other value is refused)
//!      8    8 sequence number of the segment's first record
//!     16    4 crc32c of bytes 0..16
//!     20    . frames: u32 len | u32 crc32c(payload) | payload, repeated
//! ```
//!
//! Snapshot file `snapshot-<covered_seq:020>.snap`:
//!
//! ```text
//! offset size field
//!      0    4 magic "SPAS"
//!      4    2 version (1)
//!      6    2 flags (0)
//!      8    8 covered_seq: the state includes every record with seq <= this
//!     16    8 data length in bytes
//!     24    4 crc32c(data)
//!     28    4 crc32c of bytes 0..28
//!     32    . data
//! ```

use std::ops::Range;
use std::path::Path;

use crate::Error;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"SPAJ";
/// Magic bytes at the start of every snapshot file. Distinct from the segment
/// magic so that a snapshot renamed into a segment's place is not misread.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SPAS";
/// The only format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment file header.
pub const SEGMENT_HEADER_BYTES: usize = 20;
/// Size of the snapshot file header.
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
/// Size of a record frame header (length and checksum).
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest record payload accepted by `append_batch` and by the parser.
/// A length field above this is treated as garbage, never as an allocation
/// request: it bounds the damage a flipped bit in a length field can do.
pub const RECORD_BYTES_MAX: usize = 16 << 20;
/// The largest snapshot accepted (1 GiB); snapshots are read whole into memory.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of files being written before their atomic rename.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Suffix given by the writer to snapshots it found corrupt, so that they are
/// kept for inspection but never considered again.
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The file name of the snapshot covering records up to `covered_seq`.
pub fn snapshot_file_name(covered_seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{covered_seq:020}{SNAPSHOT_SUFFIX}")
}

/// What a directory entry is, judged by its name alone.
#[derive(Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A segment starting at the given sequence number.
    Segment(u64),
    /// A snapshot covering records up to the given sequence number.
    Snapshot(u64),
    /// A leftover temporary file of an interrupted create or snapshot.
    Temp,
    /// Anything else (the lock file, `.corrupt` files, operator notes).
    Other,
}

/// Classifies a directory entry by name.
pub fn classify_name(name: &str) -> FileKind {
    fn number(s: &str, prefix: &str, suffix: &str) -> Option<u64> {
        let digits = s.strip_prefix(prefix)?.strip_suffix(suffix)?;
        // Exactly the width we write: "segment-1.log" is not ours.
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
    if let Some(base) = name.strip_suffix(TEMP_SUFFIX) {
        if base.starts_with(SEGMENT_PREFIX) || base.starts_with(SNAPSHOT_PREFIX) {
            return FileKind::Temp;
        }
    }
    if let Some(seq) = number(name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
        return FileKind::Segment(seq);
    }
    if let Some(seq) = number(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
        return FileKind::Snapshot(seq);
    }
    FileKind::Other
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(buf[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn corrupt(file: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::Corrupt {
        file: file.to_path_buf(),
        offset,
        what: what.into(),
    }
}

/// Encodes a segment header.
pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    debug_assert!(first_seq >= 1, "sequence numbers start at 1");
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&0u16.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks magic, version and flags, in that order: the version must be
/// checked before anything whose layout a future version might change.
fn check_magic_version_flags(buf: &[u8], magic: &[u8; 4], file: &Path) -> Result<(), Error> {
    debug_assert!(buf.len() >= 8);
    if &buf[0..4] != magic {
        return Err(corrupt(
            file,
            0,
            format!(
                "bad magic {:02x?} (expected {:?})",
                &buf[0..4],
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = u16_at(buf, 4);
    if version != FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            file: file.to_path_buf(),
            version,
        });
    }
    let flags = u16_at(buf, 6);
    if flags != 0 {
        return Err(Error::UnknownFlags {
            file: file.to_path_buf(),
            flags,
        });
    }
    Ok(())
}

/// Decodes and checks a segment header at the start of `buf` and returns the
/// first sequence number it declares. `buf` may be longer than the header.
pub fn decode_segment_header(buf: &[u8], file: &Path) -> Result<u64, Error> {
    if buf.len() < SEGMENT_HEADER_BYTES {
        return Err(corrupt(
            file,
            0,
            format!(
                "segment header is {} bytes, expected {SEGMENT_HEADER_BYTES}",
                buf.len()
            ),
        ));
    }
    check_magic_version_flags(buf, &SEGMENT_MAGIC, file)?;
    let crc_stored = u32_at(buf, 16);
    let crc_actual = crc32c::crc32c(&buf[0..16]);
    if crc_stored != crc_actual {
        return Err(corrupt(file, 16, "segment header checksum mismatch"));
    }
    let first_seq = u64_at(buf, 8);
    if first_seq == 0 {
        return Err(corrupt(file, 8, "segment header declares first seq 0"));
    }
    Ok(first_seq)
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= RECORD_BYTES_MAX);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The result of parsing the frame at some offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A valid record; `payload` indexes the buffer, `next` is the offset of
    /// the following frame.
    Record {
        /// The payload's byte range in the buffer.
        payload: Range<usize>,
        /// Offset just past this frame.
        next: usize,
    },
    /// The buffer ends exactly here.
    End,
    /// The bytes here are not a valid frame (incomplete or invalid).
    Bad(String),
}

/// Parses the frame starting at `pos`.
///
/// A zero length is invalid: the writer never writes empty records, and
/// without this rule a zero-filled tail (what some file systems leave after a
/// crash) would parse as an endless run of valid empty records, because
/// crc32c of nothing is 0.
pub fn parse_frame(buf: &[u8], pos: usize) -> Frame {
    debug_assert!(pos <= buf.len());
    let rest = buf.len() - pos;
    if rest == 0 {
        return Frame::End;
    }
    if rest < FRAME_HEADER_BYTES {
        return Frame::Bad(format!(
            "partial frame header ({rest} of {FRAME_HEADER_BYTES} bytes)"
        ));
    }
    let len = u32_at(buf, pos) as usize;
    let crc_stored = u32_at(buf, pos + 4);
    if len == 0 {
        return Frame::Bad("record length 0".into());
    }
    if len > RECORD_BYTES_MAX {
        return Frame::Bad(format!(
            "record length {len} exceeds the maximum {RECORD_BYTES_MAX}"
        ));
    }
    let start = pos + FRAME_HEADER_BYTES;
    if rest - FRAME_HEADER_BYTES < len {
        return Frame::Bad(format!(
            "partial record ({} of {len} payload bytes)",
            rest - FRAME_HEADER_BYTES
        ));
    }
    let payload = start..start + len;
    if crc32c::crc32c(&buf[payload.clone()]) != crc_stored {
        return Frame::Bad(format!("record checksum mismatch (length {len})"));
    }
    Frame::Record {
        next: payload.end,
        payload,
    }
}

/// After a bad frame at `bad_pos`, finds the offset of a valid frame anywhere
/// later in `buf`, if there is one.
///
/// This is what separates a torn tail (nothing valid after the damage: the
/// signature of a crash mid-write) from corruption (a valid record after the
/// damage: acknowledged data was damaged, so we must not cut it off). The
/// frame's own length is tried first because that is where the next record
/// sits when only a checksum or payload byte is damaged; the byte-by-byte scan
/// covers a damaged length field. It only runs on the error path.
pub fn valid_frame_after(buf: &[u8], bad_pos: usize) -> Option<usize> {
    debug_assert!(bad_pos <= buf.len());
    if buf.len() - bad_pos >= FRAME_HEADER_BYTES {
        let len = u32_at(buf, bad_pos) as usize;
        if (1..=RECORD_BYTES_MAX).contains(&len) {
            let natural = bad_pos + FRAME_HEADER_BYTES + len;
            if natural < buf.len() && matches!(parse_frame(buf, natural), Frame::Record { .. }) {
                return Some(natural);
            }
        }
    }
    (bad_pos + 1..buf.len().saturating_sub(FRAME_HEADER_BYTES - 1))
        .find(|&p| matches!(parse_frame(buf, p), Frame::Record { .. }))
}

/// Encodes a snapshot header for `data`.
pub fn encode_snapshot_header(covered_seq: u64, data: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut h = [0u8; SNAPSHOT_HEADER_BYTES];
    h[0..4].copy_from_slice(&SNAPSHOT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&0u16.to_le_bytes());
    h[8..16].copy_from_slice(&covered_seq.to_le_bytes());
    h[16..24].copy_from_slice(&(data.len() as u64).to_le_bytes());
    h[24..28].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a whole snapshot file's bytes and returns the covered sequence
/// number and the data's byte range.
pub fn decode_snapshot(buf: &[u8], file: &Path) -> Result<(u64, Range<usize>), Error> {
    if buf.len() < SNAPSHOT_HEADER_BYTES {
        return Err(corrupt(
            file,
            0,
            format!(
                "snapshot header is {} bytes, expected {SNAPSHOT_HEADER_BYTES}",
                buf.len()
            ),
        ));
    }
    check_magic_version_flags(buf, &SNAPSHOT_MAGIC, file)?;
    if u32_at(buf, 28) != crc32c::crc32c(&buf[0..28]) {
        return Err(corrupt(file, 28, "snapshot header checksum mismatch"));
    }
    let covered_seq = u64_at(buf, 8);
    let len = u64_at(buf, 16);
    let have = (buf.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if len != have {
        return Err(corrupt(
            file,
            SNAPSHOT_HEADER_BYTES as u64,
            format!("snapshot data is {have} bytes, header says {len}"),
        ));
    }
    let data = SNAPSHOT_HEADER_BYTES..buf.len();
    if u32_at(buf, 24) != crc32c::crc32c(&buf[data.clone()]) {
        return Err(corrupt(
            file,
            SNAPSHOT_HEADER_BYTES as u64,
            "snapshot data checksum mismatch",
        ));
    }
    Ok((covered_seq, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_foreign_names() {
        assert_eq!(classify_name(&segment_file_name(42)), FileKind::Segment(42));
        assert_eq!(classify_name(&snapshot_file_name(7)), FileKind::Snapshot(7));
        let tmp = format!("{}{TEMP_SUFFIX}", snapshot_file_name(7));
        assert_eq!(classify_name(&tmp), FileKind::Temp);
        assert_eq!(classify_name("segment-1.log"), FileKind::Other);
        assert_eq!(classify_name("LOCK"), FileKind::Other);
        let bad = format!("{}{CORRUPT_SUFFIX}", snapshot_file_name(7));
        assert_eq!(classify_name(&bad), FileKind::Other);
    }

    #[test]
    fn zero_filled_bytes_are_not_records() {
        let buf = [0u8; 64];
        assert!(matches!(parse_frame(&buf, 0), Frame::Bad(_)));
        assert_eq!(valid_frame_after(&buf, 0), None);
    }

    #[test]
    fn frame_round_trip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, b"hello");
        encode_frame(&mut buf, b"world!");
        let Frame::Record { payload, next } = parse_frame(&buf, 0) else {
            panic!("first frame should parse")
        };
        assert_eq!(&buf[payload], b"hello");
        let Frame::Record { payload, next } = parse_frame(&buf, next) else {
            panic!("second frame should parse")
        };
        assert_eq!(&buf[payload], b"world!");
        assert_eq!(parse_frame(&buf, next), Frame::End);
    }

    #[test]
    fn headers_round_trip() {
        let p = Path::new("x");
        let h = encode_segment_header(99);
        assert_eq!(decode_segment_header(&h, p).unwrap(), 99);
        let mut s = encode_snapshot_header(5, b"abc").to_vec();
        s.extend_from_slice(b"abc");
        let (seq, range) = decode_snapshot(&s, p).unwrap();
        assert_eq!((seq, &s[range]), (5, &b"abc"[..]));
    }
}
