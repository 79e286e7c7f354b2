//! File-system helpers: listing a journal directory, the writer's lock,
//! directory fsync and crash-safe file creation (temp file, fsync, rename,
//! fsync directory).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::format::{classify_name, FileKind, TEMP_SUFFIX};
use crate::Error;

/// Name of the lock file inside the journal directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The journal files in a directory, each list sorted by sequence number.
#[derive(Debug, Default)]
pub struct Listing {
    /// `(first_seq, path)` of every segment.
    pub segments: Vec<(u64, PathBuf)>,
    /// `(covered_seq, path)` of every snapshot.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Leftover temporary files.
    pub temps: Vec<PathBuf>,
}

/// Lists the journal files in `dir`.
pub fn list_dir(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        // Names we did not write may not be UTF-8; they are not ours.
        let Some(name) = name.to_str() else { continue };
        match classify_name(name) {
            FileKind::Segment(seq) => listing.segments.push((seq, entry.path())),
            FileKind::Snapshot(seq) => listing.snapshots.push((seq, entry.path())),
            FileKind::Temp => listing.temps.push(entry.path()),
            FileKind::Other => {}
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    listing.temps.sort();
    Ok(listing)
}

/// Makes the directory's entries (creations, renames, deletions) durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Takes the writer's exclusive lock on `dir` and writes our pid into the
/// lock file. The lock lives as long as the returned file is open; the lock
/// file itself is never deleted, because deleting it would let a second
/// writer lock a fresh inode while the first still holds the old one.
pub fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::io(&path))?;
    if let Err(e) = file.try_lock_exclusive() {
        if e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
            || e.kind() == std::io::ErrorKind::WouldBlock
        {
            let mut text = String::new();
            // The holder may not have written its pid yet: then it is unknown.
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        return Err(Error::io(&path)(e));
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(Error::io(&path))?;
    Ok(file)
}

/// Creates `final_path` holding `parts` crash-safely: the bytes are written
/// to a temp file and fsync'd before the rename, so after a crash the final
/// name either does not exist or names the complete file. The directory is
/// fsync'd last so that the rename itself is durable before we rely on it.
///
/// Returns the file (open for writing, positioned at its end) and whether the
/// final directory fsync succeeded; a failure there is reported separately
/// because the file exists under its final name either way.
pub fn create_atomically(
    dir: &Path,
    final_path: &Path,
    parts: &[&[u8]],
) -> Result<(File, Result<(), Error>), Error> {
    let mut tmp = final_path.as_os_str().to_owned();
    tmp.push(TEMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut file| {
            for part in parts {
                file.write_all(part)?;
            }
            file.sync_all()?;
            Ok(file)
        })
        .map_err(Error::io(&tmp))
        .and_then(|file| {
            fs::rename(&tmp, final_path).map_err(Error::io(final_path))?;
            Ok(file)
        });
    match written {
        Ok(file) => Ok((file, sync_dir(dir))),
        Err(e) => {
            // A failed create must not leave its temporary file taking the space that
            // made it fail (typically a full disk) until the next start (R3 would only
            // remove it then).
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    /// R22: a create that fails after its temporary file exists removes it at once (a
    /// full disk must not keep losing the space until the next open).
    #[test]
    fn failed_create_removes_its_temporary_file() {
        let t = TestDir::new("create-fails");
        let dir = t.path();
        // The final name is taken by a non-empty directory: the rename fails after the
        // temporary file was written and fsync'd.
        let final_path = dir.join("snapshot-00000000000000000007.snap");
        fs::create_dir(&final_path).unwrap();
        fs::write(final_path.join("occupied"), b"x").unwrap();
        assert!(create_atomically(dir, &final_path, &[b"some state"]).is_err());
        let mut left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["snapshot-00000000000000000007.snap".to_string()]);
    }
}
