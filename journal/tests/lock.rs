//! One writer per directory; readers need no lock.

mod common;

use common::*;
use spalloc_journal::{Error, Journal, Reader, LOCK_FILE_NAME};

#[test]
fn second_writer_fails_naming_dir_and_pid() {
    let t = TestDir::new("lock");
    let dir = t.path();
    let mut first = Journal::open(dir).unwrap().journal;
    append(&mut first, 1, 2);
    let e = Journal::open(dir).unwrap_err();
    let msg = e.to_string();
    match e {
        Error::Locked { dir: d, pid } => {
            assert_eq!(d, dir);
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains(&*dir.to_string_lossy()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );

    // Readers take no lock and see the writer's durable records.
    assert_eq!(read_all(dir, 1), expected(1..=2));

    drop(first);
    let opened = Journal::open(dir).unwrap();
    assert_eq!(opened.records_after_snapshot, expected(1..=2));
    let pid = std::fs::read_to_string(dir.join(LOCK_FILE_NAME)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
}

#[test]
fn empty_and_missing_directories() {
    let t = TestDir::new("empty");
    let missing = t.sub("missing");
    assert!(matches!(
        Reader::open(&missing),
        Err(Error::NoJournal { .. })
    ));
    let e = Reader::open(t.path()).unwrap_err();
    assert!(e.to_string().contains("not a journal directory"), "{e}");
    let opened = Journal::open(&missing).unwrap();
    assert!(opened.snapshot.is_none() && opened.records_after_snapshot.is_empty());
    assert_eq!(opened.journal.next_seq(), 1);
    let reader = Reader::open(&missing).unwrap();
    assert_eq!((reader.first_seq(), reader.last_seq()), (1, 0));
    assert_eq!(reader.records_from(1).unwrap().count(), 0);
}

#[test]
fn reader_sees_a_consistent_prefix_while_the_writer_appends() {
    let t = TestDir::new("concurrent");
    let dir = t.path();
    let mut writer = Journal::open(dir).unwrap().journal;
    append(&mut writer, 1, 3);
    let reader = Reader::open(dir).unwrap();
    let mut it = reader.records_from(2).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), (2, payload(2)));
    // Appended after the reader opened: not yielded (the reader's view ends
    // at its last_seq), but a fresh reader sees it.
    append(&mut writer, 4, 2);
    let rest: Vec<_> = it.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, expected(3..=3));
    assert_eq!(read_all(dir, 1), expected(1..=5));
}
