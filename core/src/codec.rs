//! The journal's event codec: how an [`Event`] becomes the bytes of one journal record and
//! back. Records are MessagePack with structs as arrays (field order), so events are
//! append-only: a new field goes last, with `#[serde(default)]`; old records must always
//! decode (the tests below, and the fixtures of `tests/old_journals.rs`).

use crate::types::Event;

/// Encode an event for the journal: MessagePack with structs as arrays (field order, not
/// field names), which makes records about half the size and decoding much cheaper than
/// with names (each name is a string to check and compare). Events are therefore
/// append-only: a new field goes last, with `#[serde(default)]`, so older records still
/// decode. (Snapshots keep field names: the core's internals change more freely.)
pub fn encode_event(e: &Event) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    write_event(&mut bytes, e);
    bytes
}

/// Append an event's encoding (see [`encode_event`]) to `out`.
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    rmp_serde::encode::write(out, e).expect("events always encode");
}

/// Decode a journaled event. Records written with field names (by earlier versions) decode
/// too: a struct reads from either form.
pub fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{config, job, simple_machine};
    use crate::{Command, JobRequest, JobTarget, TimeUs};

    fn sample_events() -> Vec<Event> {
        let mut create = job(JobRequest::Triads(2, 1));
        create.target = JobTarget::Tags(vec!["a".into(), "b".into()]);
        create.max_dead_boards = Some(3);
        create.keepalive_s = None;
        vec![
            Event::Configure {
                now_us: 1,
                config: config(vec![simple_machine("m", 2, 2)], 0.5),
            },
            Event::Command {
                now_us: 2,
                peer: "10.0.0.1".into(),
                command: Command::CreateJob(create),
            },
            Event::Command {
                now_us: 3,
                peer: "10.0.0.1".into(),
                command: Command::JobKeepalive { job_id: 1 },
            },
            Event::Command {
                now_us: 4,
                peer: "::1".into(),
                command: Command::DestroyJob {
                    job_id: 1,
                    reason: Some("done".into()),
                },
            },
            Event::BmpDone {
                now_us: 5,
                request_id: 7,
                failure: Some("Requests failed on BMP 10.0.0.2".into()),
                failed_boards: Vec::new(),
                bmp_unreachable: false,
            },
            Event::Tick { now_us: 6 },
            Event::Restarted {
                now_us: 7,
                grace_us: 30_000_000,
            },
            Event::KeptAliveUnrecorded {
                now_us: 8,
                job_ids: vec![1, 4],
            },
            Event::BmpDone {
                now_us: 9,
                request_id: 8,
                failure: Some("Requests failed on BMP 10.0.0.2".into()),
                failed_boards: vec![1, 5],
                bmp_unreachable: false,
            },
            Event::Admin {
                now_us: 10,
                actor: "ann".into(),
                action: crate::AdminAction::Drain {
                    board: crate::BoardRef::Physical {
                        machine: "m".into(),
                        cabinet: 0,
                        frame: 1,
                        board: 5,
                    },
                    reason: "fan".into(),
                },
            },
            Event::Command {
                now_us: 11,
                peer: "10.0.0.1".into(),
                command: Command::ReportProblem {
                    ip: "10.0.0.9".into(),
                    x: 1,
                    y: 2,
                    p: None,
                    description: Some("red".into()),
                },
            },
        ]
    }

    #[test]
    fn events_round_trip_compactly() {
        for e in sample_events() {
            let compact = encode_event(&e);
            let named = rmp_serde::to_vec_named(&e).unwrap();
            assert!(compact.len() < named.len(), "{e:?}");
            assert_eq!(decode_event(&compact).unwrap(), e);
        }
    }

    /// A restart recorded before `grace_us` existed decodes as a plain reset (grace 0).
    #[test]
    fn restart_records_without_a_grace_still_decode() {
        #[derive(serde::Serialize)]
        #[allow(dead_code)]
        enum Before {
            Command,
            BmpDone,
            Tick,
            Configure,
            Restarted { now_us: TimeUs },
        }
        let old = rmp_serde::to_vec(&Before::Restarted { now_us: 7 }).unwrap();
        assert_eq!(
            decode_event(&old).unwrap(),
            Event::Restarted {
                now_us: 7,
                grace_us: 0
            }
        );
        let named = rmp_serde::to_vec_named(&Before::Restarted { now_us: 7 }).unwrap();
        assert_eq!(
            decode_event(&named).unwrap(),
            Event::Restarted {
                now_us: 7,
                grace_us: 0
            }
        );
    }

    /// A BMP completion recorded before board health (no blamed boards, no "unreachable")
    /// decodes with neither, in both record forms.
    #[test]
    fn bmp_completions_without_blamed_boards_still_decode() {
        #[derive(serde::Serialize)]
        #[allow(dead_code)]
        enum Before {
            Command,
            BmpDone {
                now_us: TimeUs,
                request_id: u64,
                failure: Option<String>,
            },
        }
        let old = Before::BmpDone {
            now_us: 5,
            request_id: 7,
            failure: Some("Requests failed on BMP 10.0.0.2".into()),
        };
        let want = Event::BmpDone {
            now_us: 5,
            request_id: 7,
            failure: Some("Requests failed on BMP 10.0.0.2".into()),
            failed_boards: Vec::new(),
            bmp_unreachable: false,
        };
        assert_eq!(
            decode_event(&rmp_serde::to_vec(&old).unwrap()).unwrap(),
            want
        );
        assert_eq!(
            decode_event(&rmp_serde::to_vec_named(&old).unwrap()).unwrap(),
            want
        );
    }

    /// Journals written before records dropped their field names must still replay.
    #[test]
    fn records_with_field_names_still_decode() {
        for e in sample_events() {
            let named = rmp_serde::to_vec_named(&e).unwrap();
            assert_eq!(decode_event(&named).unwrap(), e);
        }
    }
}
