//! Reading segment files: header checks and the frame scan shared by the
//! writer's recovery, the reader and `verify`, so that all three agree on
//! what is a torn tail and what is corruption.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::format::{
    decode_segment_header, parse_frame, valid_frame_after, Frame, SEGMENT_HEADER_BYTES,
};
use crate::Error;

/// Where a segment's valid frames end.
#[derive(Debug)]
pub struct ScanEnd {
    /// Number of valid records.
    pub count: u64,
    /// Offset just past the last valid record.
    pub valid_end: usize,
    /// The offset and description of an invalid tail, if there is one.
    pub tail: Option<(usize, String)>,
}

/// Checks a segment header against the sequence number in its file name.
pub fn check_header(buf: &[u8], file: &Path, name_seq: u64) -> Result<(), Error> {
    let header_seq = decode_segment_header(buf, file)?;
    if header_seq != name_seq {
        return Err(Error::corrupt(
            file,
            8,
            format!(
                "segment header says first seq {header_seq}, but its file name says {name_seq}"
            ),
        ));
    }
    Ok(())
}

/// Checks the header of the *last* segment: like [`check_header`], but a
/// header that is short or all zeros gets a message saying why that is
/// damage and not a crash. Segments are created whole (header written and
/// fsync'd under a temporary name, then renamed, R3), so a file under its
/// final name always had a complete, durable header; a short or zeroed one
/// was damaged afterwards and may have held acknowledged records (R5).
pub fn check_last_header(buf: &[u8], file: &Path, name_seq: u64) -> Result<(), Error> {
    match check_header(buf, file, name_seq) {
        Err(Error::Corrupt { file, offset, what })
            if buf.len() < SEGMENT_HEADER_BYTES || buf.iter().all(|&b| b == 0) =>
        {
            let shape = if buf.len() < SEGMENT_HEADER_BYTES {
                format!("{} bytes long", buf.len())
            } else {
                format!("all zeros ({} bytes)", buf.len())
            };
            Err(Error::Corrupt {
                file,
                offset,
                what: format!(
                    "the last segment is {shape} ({what}); segments are created whole under a \
                     temporary name, so this is damage after the fact, not an interrupted \
                     creation, and it may have held acknowledged records"
                ),
            })
        }
        other => other,
    }
}

/// Reads just the header of a segment file and checks it.
pub fn read_and_check_header(file: &Path, name_seq: u64) -> Result<(), Error> {
    let mut buf = [0u8; SEGMENT_HEADER_BYTES];
    let mut f = File::open(file).map_err(Error::io(file))?;
    let mut got = 0;
    // A short file is reported by check_header, not as an I/O error.
    while got < buf.len() {
        match f.read(&mut buf[got..]).map_err(Error::io(file))? {
            0 => break,
            n => got += n,
        }
    }
    check_header(&buf[..got], file, name_seq)
}

/// Decides what a bad frame at `pos` is. If any valid frame follows, the
/// damage is corruption. Otherwise it is a torn tail, which is acceptable
/// only in the last segment: every other segment was complete and fsync'd
/// before the next one was created.
pub fn classify_bad(
    buf: &[u8],
    pos: usize,
    what: String,
    file: &Path,
    tolerate_tail: bool,
) -> Result<(usize, String), Error> {
    debug_assert!(pos >= SEGMENT_HEADER_BYTES && pos < buf.len());
    if let Some(good) = valid_frame_after(buf, pos) {
        return Err(Error::corrupt(
            file,
            pos as u64,
            format!("{what}, yet a valid record follows at offset {good}"),
        ));
    }
    if tolerate_tail {
        return Ok((pos, what));
    }
    Err(Error::corrupt(
        file,
        pos as u64,
        format!("{what} at the end of a segment that is not the last one"),
    ))
}

/// Walks every frame after the header, calling `on_record` with each valid
/// payload in order.
pub fn scan_frames(
    buf: &[u8],
    file: &Path,
    tolerate_tail: bool,
    mut on_record: impl FnMut(&[u8]),
) -> Result<ScanEnd, Error> {
    debug_assert!(buf.len() >= SEGMENT_HEADER_BYTES);
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut count = 0u64;
    loop {
        match parse_frame(buf, pos) {
            Frame::Record { payload, next } => {
                on_record(&buf[payload]);
                count += 1;
                pos = next;
            }
            Frame::End => {
                return Ok(ScanEnd {
                    count,
                    valid_end: pos,
                    tail: None,
                })
            }
            Frame::Bad(what) => {
                let tail = classify_bad(buf, pos, what, file, tolerate_tail)?;
                return Ok(ScanEnd {
                    count,
                    valid_end: pos,
                    tail: Some(tail),
                });
            }
        }
    }
}
