//! Salvage: a new journal holding every good record of a damaged one, up to the first
//! damage, for an operator whose journal the server refuses (R5, R6, R11, R12, R14).
//!
//! Nothing is decoded or re-encoded: each segment's valid prefix (its header and every
//! checksummed frame before the first bad byte) is copied byte for byte, in order, until
//! the first damage or gap; every later byte is dropped and listed. Snapshots that check
//! out and cover no dropped record are copied too, so a journal whose oldest records were
//! deleted by retention still has its starting point. The source is only read (no lock).
//! The new files are created like the writer's (temp file, fsync, rename, directory fsync),
//! so the result opens with [`crate::Journal::open`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::files::{create_atomically, list_dir, sync_dir};
use crate::format::{segment_file_name, snapshot_file_name, SEGMENT_HEADER_BYTES};
use crate::segment::{check_header, scan_frames};
use crate::snapshot::read_snapshot_file;
use crate::{Error, Problem};

/// A file, or part of one, left out of the salvaged journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The file.
    pub file: PathBuf,
    /// Bytes left out (from `offset` to the end).
    pub bytes: u64,
    /// Where the left-out part starts.
    pub offset: u64,
    /// Intact records found in it after all (a later segment beyond the damage):
    /// `(first_seq, count)`. They follow lost ones, so they cannot be kept.
    pub intact_records: Option<(u64, u64)>,
}

/// What [`salvage`] kept and what it left out.
#[derive(Clone, Debug, Default)]
pub struct SalvageReport {
    /// The oldest record kept.
    pub first_seq: u64,
    /// The newest record kept (`first_seq - 1` if none).
    pub last_seq: u64,
    /// The first damage found (`None`: the journal was sound, so this is a plain copy).
    pub damage: Option<Problem>,
    /// An incomplete last batch (a crash mid-write; never acknowledged), left out.
    pub torn_tail: Option<Problem>,
    /// Every part of a segment left out, in order.
    pub dropped: Vec<Dropped>,
    /// Snapshots copied (covered seqs).
    pub snapshots_kept: Vec<u64>,
    /// Snapshots left out, and why.
    pub snapshots_dropped: Vec<(PathBuf, String)>,
    /// The salvaged journal's segment files.
    pub segments_written: Vec<PathBuf>,
}

/// Copy the good part of the journal in `dir` into the new directory `out` (which must not
/// exist or be empty). See the module docs.
pub fn salvage(dir: &Path, out: &Path) -> Result<SalvageReport, Error> {
    if !dir.is_dir() {
        return Err(Error::NoJournal {
            dir: dir.to_path_buf(),
        });
    }
    let listing = list_dir(dir)?;
    if listing.segments.is_empty() {
        return Err(Error::NoJournal {
            dir: dir.to_path_buf(),
        });
    }
    let out_used = fs::read_dir(out)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if out_used {
        return Err(Error::io(out)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the salvage directory must be new or empty (nothing in it is overwritten)",
        )));
    }
    fs::create_dir_all(out).map_err(Error::io(out))?;

    let mut report = SalvageReport {
        first_seq: listing.segments[0].0,
        ..SalvageReport::default()
    };
    let mut next_seq = report.first_seq;
    let last_index = listing.segments.len() - 1;
    let mut stopped = false;
    for (i, (name_seq, path)) in listing.segments.iter().enumerate() {
        let buf = fs::read(path).map_err(Error::io(path))?;
        if stopped {
            // Beyond the damage: dropped whole, but say what intact records it held.
            let intact = check_header(&buf, path, *name_seq).ok().map(|()| {
                let mut n = 0;
                let _ = scan_frames(&buf, path, true, |_| n += 1);
                (*name_seq, n)
            });
            report.dropped.push(Dropped {
                file: path.clone(),
                bytes: buf.len() as u64,
                offset: 0,
                intact_records: intact,
            });
            continue;
        }
        let header = check_header(&buf, path, *name_seq).and_then(|()| {
            if *name_seq != next_seq {
                Err(Error::corrupt(
                    path,
                    0,
                    format!(
                        "segment starts at record {name_seq}, but the one before it ends at \
                         record {}",
                        next_seq - 1
                    ),
                ))
            } else {
                Ok(())
            }
        });
        if let Err(e) = header {
            report.damage = Some(Problem::from_error(&e, path));
            report.dropped.push(Dropped {
                file: path.clone(),
                bytes: buf.len() as u64,
                offset: 0,
                intact_records: None,
            });
            stopped = true;
            continue;
        }
        let mut count = 0u64;
        let scan = scan_frames(&buf, path, i == last_index, |_| count += 1);
        let valid_end = SEGMENT_HEADER_BYTES
            + frames_len(&buf[SEGMENT_HEADER_BYTES..], count).expect("counted frames are whole");
        match scan {
            Ok(end) => {
                if let Some((offset, what)) = end.tail {
                    report.torn_tail = Some(Problem {
                        file: path.clone(),
                        offset: offset as u64,
                        what,
                    });
                    report.dropped.push(Dropped {
                        file: path.clone(),
                        bytes: (buf.len() - offset) as u64,
                        offset: offset as u64,
                        intact_records: None,
                    });
                }
            }
            Err(e) => {
                report.damage = Some(Problem::from_error(&e, path));
                report.dropped.push(Dropped {
                    file: path.clone(),
                    bytes: (buf.len() - valid_end) as u64,
                    offset: valid_end as u64,
                    intact_records: None,
                });
                stopped = true;
            }
        }
        if count == 0 && i > 0 && stopped {
            // Nothing good in a damaged segment after the first: no file for it.
            continue;
        }
        let target = out.join(segment_file_name(*name_seq));
        let (_, synced) = create_atomically(out, &target, &[&buf[..valid_end]])?;
        synced?;
        report.segments_written.push(target);
        next_seq = name_seq + count;
    }
    report.last_seq = next_seq - 1;

    for (covered_seq, path) in &listing.snapshots {
        if *covered_seq > report.last_seq {
            report.snapshots_dropped.push((
                path.clone(),
                format!(
                    "covers records up to {covered_seq}, beyond the last one kept ({})",
                    report.last_seq
                ),
            ));
            continue;
        }
        match read_snapshot_file(path, *covered_seq) {
            Ok(_) => {
                let bytes = fs::read(path).map_err(Error::io(path))?;
                let target = out.join(snapshot_file_name(*covered_seq));
                let (_, synced) = create_atomically(out, &target, &[&bytes])?;
                synced?;
                report.snapshots_kept.push(*covered_seq);
            }
            Err(e @ Error::Corrupt { .. }) => report
                .snapshots_dropped
                .push((path.clone(), Problem::from_error(&e, path).to_string())),
            Err(e) => return Err(e),
        }
    }
    if report.first_seq > 1
        && !report
            .snapshots_kept
            .iter()
            .any(|s| s + 1 >= report.first_seq)
    {
        return Err(Error::corrupt(
            dir,
            0,
            format!(
                "records before {} were deleted by retention and no snapshot kept reaches \
                 them, so the salvaged records have no state to start from",
                report.first_seq
            ),
        ));
    }
    sync_dir(out)?;
    Ok(report)
}

/// The length of the first `count` frames of `frames` (which are known to be whole).
fn frames_len(frames: &[u8], count: u64) -> Option<usize> {
    let mut pos = 0usize;
    for _ in 0..count {
        let len = u32::from_le_bytes(frames.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos += crate::format::FRAME_HEADER_BYTES + len;
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use crate::{Journal, Options, Reader};

    fn records(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let r = Reader::open(dir).unwrap();
        r.records_from(r.first_seq())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A sound journal is copied whole; the copy opens to the same records.
    #[test]
    fn sound_journal_is_copied_whole() {
        let t = TestDir::new("salvage-sound");
        let (src, out) = (t.path().join("src"), t.path().join("out"));
        {
            let mut j = Journal::open(&src).unwrap().journal;
            j.append_batch([&b"a"[..], &b"b"[..]]).unwrap();
            j.write_snapshot(2, b"state").unwrap();
            j.append_batch([&b"c"[..]]).unwrap();
        }
        let report = salvage(&src, &out).unwrap();
        assert!(
            report.damage.is_none() && report.dropped.is_empty(),
            "{report:?}"
        );
        assert_eq!((report.first_seq, report.last_seq), (1, 3));
        assert_eq!(report.snapshots_kept, vec![2]);
        assert_eq!(records(&out), records(&src));
        let opened = Journal::open(&out).unwrap();
        assert_eq!(opened.snapshot.unwrap().covered_seq, 2);
        // A second salvage into the same (now used) directory is refused.
        assert!(salvage(&src, &out).is_err());
    }

    /// Damage in a middle segment: everything before it is kept, that segment's tail and
    /// every later segment are listed, with the intact records that had to go.
    #[test]
    fn damage_keeps_the_records_before_it_and_lists_the_rest() {
        let t = TestDir::new("salvage-damage");
        let (src, out) = (t.path().join("src"), t.path().join("out"));
        let opts = Options {
            segment_bytes_max: 60,
            ..Options::default()
        };
        {
            let mut j = Journal::open_with(&src, opts).unwrap().journal;
            for i in 0..6u8 {
                j.append_batch([&[i; 20][..]]).unwrap();
            }
        }
        let original = records(&src);
        let segs = list_dir(&src).unwrap().segments;
        assert!(segs.len() >= 3, "{segs:?}");
        // Flip a payload byte of the second segment's first record.
        let (seq2, path2) = segs[1].clone();
        let mut bytes = fs::read(&path2).unwrap();
        bytes[SEGMENT_HEADER_BYTES + 8] ^= 1;
        fs::write(&path2, &bytes).unwrap();
        assert!(Journal::open(&src).is_err(), "the writer refuses it");

        let report = salvage(&src, &out).unwrap();
        assert_eq!(report.last_seq, seq2 - 1, "{report:?}");
        let damage = report.damage.clone().unwrap();
        assert_eq!(damage.file, path2);
        assert_eq!(report.dropped[0].file, path2);
        assert_eq!(report.dropped[0].offset, SEGMENT_HEADER_BYTES as u64);
        assert_eq!(report.dropped.len(), segs.len() - 1);
        assert!(report.dropped[1].intact_records.is_some_and(|(_, n)| n > 0));
        let kept = records(&out);
        assert_eq!(kept.len() as u64, seq2 - 1);
        assert_eq!(kept, original[..kept.len()].to_vec());
        let opened = Journal::open(&out).unwrap();
        assert_eq!(opened.records_after_snapshot.len() as u64, seq2 - 1);
    }
}
