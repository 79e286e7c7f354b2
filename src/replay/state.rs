//! The state at a moment, as text (with a map of each machine's boards) and as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::core::coordinates::Board;
use crate::core::{Core, JobId, TimeUs};
use crate::timefmt::format_iso;

use super::{call_text, Folder, Position, Step};

// ----- state rendering ------------------------------------------------------------------------

pub(super) fn job_state_name(n: u8) -> &'static str {
    match n {
        1 => "queued",
        2 => "power",
        3 => "ready",
        4 => "destroyed",
        _ => "unknown",
    }
}

fn power_name(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// A text map of one machine: one cell per triad, `[a b c]` holding the owners of boards
/// z=0, 1, 2 (a job id, `.` free, `X` dead, `D` drained (out of service); `N*` a destroyed
/// job still powering off; a job keeps a board drained under it until it ends), rows
/// from the top (highest y) down, as `spalloc-machine NAME` draws it.
pub fn machine_map(core: &Core, machine: &str) -> Option<String> {
    let m = core
        .list_machines()
        .into_iter()
        .find(|m| m.name == machine)?;
    let owners = core
        .board_owners()
        .into_iter()
        .find(|(n, _)| n == machine)
        .map(|(_, o)| o)
        .unwrap_or_default();
    let live: BTreeSet<JobId> = core.live_job_ids().into_iter().collect();
    let dead: BTreeSet<[u32; 3]> = m.dead_boards.iter().copied().collect();
    let health = core.health();
    let label = |b: Board| -> String {
        match owners.get(&b) {
            Some(id) if live.contains(id) => id.to_string(),
            Some(id) => format!("{id}*"),
            None if health.drain_of(machine, b).is_some() => "D".to_string(),
            None if dead.contains(&[b.x, b.y, b.z]) => "X".to_string(),
            None => ".".to_string(),
        }
    };
    let w = (0..m.width)
        .flat_map(|x| (0..m.height).flat_map(move |y| (0..3).map(move |z| Board::new(x, y, z))))
        .map(|b| label(b).len())
        .max()
        .unwrap_or(1);
    let cell_w = 3 * w + 4; // "[" + 3 labels + 2 spaces + "]"
    let ylab = format!("y={}", m.height.saturating_sub(1)).len();
    let mut out = String::new();
    let _ = write!(out, "{:ylab$} ", "");
    for x in 0..m.width {
        let _ = write!(out, " {:^cell_w$}", format!("x={x}"));
    }
    out.push('\n');
    for y in (0..m.height).rev() {
        let _ = write!(out, "{:>ylab$} ", format!("y={y}"));
        for x in 0..m.width {
            let cells: Vec<String> = (0..3)
                .map(|z| format!("{:>w$}", label(Board::new(x, y, z))))
                .collect();
            let _ = write!(out, " [{}]", cells.join(" "));
        }
        out.push('\n');
    }
    Some(out)
}

/// The legend printed under machine maps.
pub const MAP_LEGEND: &str = "each [a b c] is one triad: the owners of its boards z=0, z=1, z=2; \
    N = job N, N* = destroyed job N whose boards are still powering off, . = free, X = dead, \
    D = drained (out of service; a job on it keeps it until it ends)";

pub(super) fn time_of(folder: &Folder, last: Option<&Step>) -> String {
    match last {
        Some(s) => format!("#{} {}", s.seq, format_iso(s.event.now_us())),
        None if folder.seq == 0 => "#0 (before the first event)".to_string(),
        None => format!(
            "#{} {} (the starting snapshot)",
            folder.seq,
            format_iso(folder.core.now_us())
        ),
    }
}

/// The state in text: live jobs, then each machine with its usage and (if `maps`) its map.
pub fn state_text(folder: &Folder, maps: bool) -> String {
    let core = &folder.core;
    let mut out = String::new();
    let jobs = core.list_jobs();
    let _ = writeln!(out, "Live jobs: {}", jobs.len());
    for j in &jobs {
        let _ = write!(
            out,
            "  job {}: owner {:?}, {}, power {}, keepalive {}, last host {}",
            j.job_id,
            j.owner,
            job_state_name(j.state),
            power_name(j.power),
            j.keepalive.map_or("none".to_string(), |k| format!("{k} s")),
            if j.keepalivehost.is_empty() {
                "-"
            } else {
                &j.keepalivehost
            }
        );
        if let (Some(m), Some(b)) = (&j.allocated_machine_name, &j.boards) {
            let _ = write!(out, ", {} boards on {m}", b.len());
        }
        let _ = writeln!(
            out,
            ", created {} as {}",
            format_iso((j.start_time * 1e6).round() as TimeUs),
            call_text(&j.args_json, &j.kwargs_json)
        );
    }
    if !folder.draining().is_empty() {
        let _ = writeln!(
            out,
            "Destroyed jobs still holding boards (powering off): {}",
            folder
                .draining()
                .iter()
                .map(|id| format!("job {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let owners: BTreeMap<String, BTreeMap<Board, JobId>> =
        core.board_owners().into_iter().collect();
    let machines = core.list_machines();
    let _ = writeln!(out, "Machines: {}", machines.len());
    for m in &machines {
        let total = (m.width * m.height * 3) as usize - m.dead_boards.len();
        let used = owners.get(&m.name).map_or(0, BTreeMap::len);
        // (A board drained under a running job is both held and among the dead.)
        let held_live = owners.get(&m.name).map_or(0, |o| {
            o.keys()
                .filter(|b| !m.dead_boards.contains(&[b.x, b.y, b.z]))
                .count()
        });
        let _ = writeln!(
            out,
            "  {}: {}x{} triads, {total} boards ({} dead), {used} in use, {} free; tags {:?}",
            m.name,
            m.width,
            m.height,
            m.dead_boards.len(),
            total - held_live.min(total),
            m.tags
        );
        if maps {
            if let Some(map) = machine_map(core, &m.name) {
                for l in map.lines() {
                    let _ = writeln!(out, "    {l}");
                }
            }
        }
    }
    if maps && !machines.is_empty() {
        let _ = writeln!(out, "  ({MAP_LEGEND})");
    }
    out
}

/// The state as JSON: jobs (as `list_jobs` gives them), draining jobs, and per machine its
/// size, dead boards, every held board's owner and the text map.
pub fn state_json(folder: &Folder) -> Value {
    let core = &folder.core;
    let owners: BTreeMap<String, BTreeMap<Board, JobId>> =
        core.board_owners().into_iter().collect();
    let machines: Vec<Value> = core
        .list_machines()
        .iter()
        .map(|m| {
            let held = owners.get(&m.name).cloned().unwrap_or_default();
            json!({
                "name": m.name, "tags": m.tags, "width": m.width, "height": m.height,
                "boards": (m.width * m.height * 3) as usize - m.dead_boards.len(),
                "dead_boards": m.dead_boards,
                "in_use": held.len(),
                "owners": held.iter().map(|(b, id)| json!({"board": [b.x, b.y, b.z], "job_id": id})).collect::<Vec<_>>(),
                "map": machine_map(core, &m.name).unwrap_or_default().lines().collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "seq": folder.seq,
        "time": format_iso(core.now_us()),
        "time_us": core.now_us(),
        "jobs": core.list_jobs(),
        "draining": folder.draining(),
        "machines": machines,
    })
}

/// The `--at` answer as text.
pub fn at_text(folder: &Folder, last: Option<&Step>, pos: Position, notes: &[String]) -> String {
    let mut out = String::new();
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "State at {pos}: after record {}",
        time_of(folder, last)
    );
    out.push_str(&state_text(folder, true));
    out
}
