//! A scratch directory for unit tests, removed on drop (the crate may not
//! depend on `tempfile`).

use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir.
pub struct TestDir(PathBuf);

impl TestDir {
    /// Creates `<tmp>/spalloc-journal-unit-<pid>-<name>`, emptied first.
    pub fn new(name: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!(
            "spalloc-journal-unit-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
