//! A first end-to-end pass through the core: distilled case 3 of behaviour.md §F.
use spalloc::core::sim::{config, job, machine_with, Sim};
use spalloc::core::*;

#[test]
fn distilled_case_3_job_management() {
    let m = machine_with(
        "m",
        1,
        2,
        &[],
        &[],
        |b| [b.x * 10, b.y * 10, b.z * 10],
        |c, f| format!("10.0.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![m], 0.1));
    let j0 = sim.create(JobRequest::OneBoard);
    let s = sim.state(j0);
    assert_eq!(
        (s.state, s.power, s.keepalive, s.reason.as_deref()),
        (3, Some(true), Some(60.0), None)
    );
    assert_eq!(s.keepalivehost.as_deref(), Some("127.0.0.1"));
    let info = sim.machine_info(j0);
    assert_eq!((info.width, info.height), (Some(8), Some(8)));
    assert_eq!(
        info.connections,
        Some(vec![((0, 0), "11.0.0.0".to_string())])
    );
    assert_eq!(info.boards, Some(vec![[0, 0, 0]]));
    let mut torus = job(JobRequest::Triads(1, 2));
    torus.require_torus = true;
    let j1 = sim.create_job(torus);
    assert_eq!(sim.state(j1).state, 1);
    assert_eq!(sim.machine_info(j1).width, None);
    let j2 = sim.create(JobRequest::Triads(2, 2));
    let s = sim.state(j2);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (4, Some("Cancelled: No suitable machines available."))
    );
    assert_eq!(
        (s.keepalive, s.start_time, s.keepalivehost),
        (None, None, None)
    );
    assert_eq!(sim.core.list_jobs().len(), 2);
    sim.destroy(j0, Some("Test reason..."));
    assert_eq!(sim.state(j0).reason.as_deref(), Some("Test reason..."));
    assert_eq!(sim.state(j1).state, 1);
    sim.advance(0.5);
    let s = sim.state(j1);
    assert_eq!((s.state, s.power), (3, Some(true)));
    assert_eq!(sim.machine_info(j1).boards.map(|b| b.len()), Some(6));
}
