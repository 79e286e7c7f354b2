//! Stage 2 of reading a configuration: shorthands expanded, every machine checked alone,
//! then the machines against each other, into the validated [`Config`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::address::format_quad;
use super::raw::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Stage 2: shorthands expanded, every machine checked alone, then the machines against each
// other.
// ---------------------------------------------------------------------------------------------

/// A machine whose shorthand has been expanded: every BMP and board IP known.
pub(super) struct Resolved {
    pub(super) raw: RawMachine,
    pub(super) bmps: Vec<RawBmp>,
    pub(super) boards: Vec<RawBoard>,
}

pub(super) fn resolve(mut raw: RawMachine) -> Resolved {
    let form = std::mem::replace(
        &mut raw.form,
        Form::Explicit {
            bmps: Vec::new(),
            boards: Vec::new(),
        },
    );
    let (bmps, boards) = match form {
        Form::Explicit { bmps, boards } => (bmps, boards),
        Form::SingleBoard { bmp, ip } => {
            let sb = join(&raw.path, "single_board");
            // As the original's `single_board`: a 1x1 machine whose triad has only board 0.
            raw.size = Some((Some(1), Some(1)));
            raw.dead_boards = vec![
                (Board::new(0, 0, 1), sb.clone()),
                (Board::new(0, 0, 2), sb.clone()),
            ];
            raw.dead_links = Vec::new();
            let bmps = vec![RawBmp {
                path: join(&sb, "bmp"),
                cabinet: 0,
                frame: 0,
                address: bmp,
            }];
            let boards = vec![RawBoard {
                path: sb.clone(),
                ip_path: join(&sb, "ip"),
                logical: Board::new(0, 0, 0),
                cabinet: 0,
                frame: 0,
                board: 0,
                ip: Some(ip),
            }];
            (bmps, boards)
        }
        Form::Standard { ips, mut boards } => {
            // The original computes with unbounded integers and keeps the low 32 bits when
            // formatting, which is wrapping 32-bit arithmetic.
            let frame_base = |c: u32, f: u32| {
                ips.base_ip
                    .wrapping_add(ips.cabinet_stride.wrapping_mul(c))
                    .wrapping_add(ips.frame_stride.wrapping_mul(f))
            };
            let si = join(&raw.path, "standard_ips");
            let frames: BTreeSet<(u32, u32)> =
                boards.iter().map(|b| (b.cabinet, b.frame)).collect();
            let bmps = frames
                .into_iter()
                .map(|(c, f)| RawBmp {
                    path: si.clone(),
                    cabinet: c,
                    frame: f,
                    address: format_quad(frame_base(c, f).wrapping_add(ips.bmp_offset)),
                })
                .collect();
            for b in &mut boards {
                let ip = frame_base(b.cabinet, b.frame)
                    .wrapping_add(ips.board_stride.wrapping_mul(b.board))
                    .wrapping_add(ips.spinnaker_offset);
                b.ip = Some(format_quad(ip));
            }
            (bmps, boards)
        }
    };
    Resolved { raw, bmps, boards }
}

pub(super) fn inside(b: Board, w: u32, h: u32) -> bool {
    b.x < w && b.y < h && b.z < 3
}

/// Checks one machine alone; `None` if it has any problem.
pub(super) fn validate_machine(p: &mut Problems, r: &Resolved) -> Option<MachineConfig> {
    let before = p.0.len();
    let m = &r.raw;
    let (width, height) = match m.size {
        Some((Some(w), Some(h))) => {
            for (v, key) in [(w, "width"), (h, "height")] {
                if v == 0 || v > MAX_TRIADS_PER_SIDE {
                    p.add(
                        &join(&m.path, key),
                        format!("must be 1-{MAX_TRIADS_PER_SIDE} triads, found {v}"),
                    );
                }
            }
            (w, h)
        }
        Some((w, _)) => {
            let given = if w.is_some() { "width" } else { "height" };
            p.add(
                &m.path,
                format!("width and height must be given together (only {given} is given)"),
            );
            return None;
        }
        None => {
            let all = r
                .boards
                .iter()
                .map(|b| b.logical)
                .chain(m.dead_boards.iter().map(|(b, _)| *b));
            let Some((w, h)) = all.fold(None, |acc: Option<(u32, u32)>, b| {
                let (w, h) = acc.unwrap_or((0, 0));
                Some((w.max(b.x.saturating_add(1)), h.max(b.y.saturating_add(1))))
            }) else {
                p.add(
                    &m.path,
                    "cannot infer width and height: no boards and no dead boards",
                );
                return None;
            };
            if w > MAX_TRIADS_PER_SIDE || h > MAX_TRIADS_PER_SIDE {
                p.add(
                    &m.path,
                    format!("inferred size {w}x{h} exceeds the largest machine ({MAX_TRIADS_PER_SIDE}x{MAX_TRIADS_PER_SIDE} triads)"),
                );
            }
            (w, h)
        }
    };
    if p.0.len() != before {
        // Every position check below depends on a sane size.
        return None;
    }

    let mut dead: BTreeMap<Board, &str> = BTreeMap::new();
    for (b, path) in &m.dead_boards {
        if !inside(*b, width, height) {
            p.add(
                path,
                format!("dead board {b} lies outside the {width}x{height} machine"),
            );
        } else {
            dead.entry(*b).or_insert(path);
        }
    }
    let mut dead_links = BTreeSet::new();
    for (b, l, path) in &m.dead_links {
        if !inside(*b, width, height) {
            p.add(
                path,
                format!("dead link on board {b} lies outside the {width}x{height} machine"),
            );
        } else {
            dead_links.insert((*b, *l));
        }
    }

    let mut logical: BTreeMap<Board, &str> = BTreeMap::new();
    let mut physical: HashMap<(u32, u32, u32), &str> = HashMap::new();
    let mut frames: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    let mut boards = Vec::new();
    for b in &r.boards {
        let l = b.logical;
        if !inside(l, width, height) {
            p.add(
                &b.path,
                format!("board {l} lies outside the {width}x{height} machine"),
            );
        } else if let Some(first) = logical.get(&l) {
            p.add(&b.path, format!("board {l} is already listed at {first}"));
        } else if let Some(d) = dead.get(&l) {
            p.add(&b.path, format!("board {l} is also listed as dead at {d}"));
        } else {
            logical.insert(l, &b.path);
        }
        if b.board >= BOARDS_PER_FRAME {
            p.add(
                &b.path,
                format!(
                    "board number {} is out of range 0-{}",
                    b.board,
                    BOARDS_PER_FRAME - 1
                ),
            );
        }
        let pos = (b.cabinet, b.frame, b.board);
        if let Some(first) = physical.get(&pos) {
            p.add(
                &b.path,
                format!(
                    "physical position (cabinet {}, frame {}, board {}) is already used by {first}",
                    b.cabinet, b.frame, b.board
                ),
            );
        } else {
            physical.insert(pos, &b.path);
        }
        frames.entry((b.cabinet, b.frame)).or_insert(&b.path);
        let ip = b.ip.clone().unwrap_or_default();
        if let Err(e) = check_host(&ip) {
            p.add(
                &b.ip_path,
                format!("invalid IP address or host name {ip:?}: {e}"),
            );
        }
        boards.push(BoardConfig {
            logical: l,
            cabinet: b.cabinet,
            frame: b.frame,
            board: b.board,
            ip,
        });
    }

    // The original insists that every board of the rectangle is either working or dead.
    if p.0.len() == before {
        let missing: Vec<String> = (0..width)
            .flat_map(|x| (0..height).flat_map(move |y| (0..3).map(move |z| Board::new(x, y, z))))
            .filter(|b| !logical.contains_key(b) && !dead.contains_key(b))
            .map(|b| b.to_string())
            .collect();
        if !missing.is_empty() {
            let shown = missing
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if missing.len() > 8 {
                format!(" and {} more", missing.len() - 8)
            } else {
                String::new()
            };
            p.add(
                &m.path,
                format!("{} board(s) of the {width}x{height} machine neither listed nor dead: {shown}{more}", missing.len()),
            );
        }
    }

    let mut bmp_at: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    let mut bmps = Vec::new();
    for b in &r.bmps {
        if let Some(first) = bmp_at.get(&(b.cabinet, b.frame)) {
            p.add(
                &b.path,
                format!(
                    "a BMP for cabinet {}, frame {} is already given at {first}",
                    b.cabinet, b.frame
                ),
            );
            continue;
        }
        bmp_at.insert((b.cabinet, b.frame), &b.path);
        if let Err(e) = split_address(&b.address) {
            p.add(
                &address_path(b),
                format!("invalid BMP address {:?}: {e}", b.address),
            );
        }
        bmps.push(BmpConfig {
            cabinet: b.cabinet,
            frame: b.frame,
            address: b.address.clone(),
        });
    }
    for ((c, f), first_board) in &frames {
        if !bmp_at.contains_key(&(*c, *f)) {
            p.add(
                &join(&m.path, "bmps"),
                format!("no BMP for cabinet {c}, frame {f}, which holds working boards (e.g. {first_board})"),
            );
        }
    }

    if p.0.len() != before {
        return None;
    }
    let tags: BTreeSet<String> = m.tags.iter().cloned().collect();
    boards.sort();
    bmps.sort();
    Some(MachineConfig {
        name: m.name.clone(),
        tags: tags.into_iter().collect(),
        width,
        height,
        dead_boards: dead.into_keys().collect(),
        dead_links: dead_links.into_iter().collect(),
        bmps,
        boards,
    })
}

/// Where a BMP's address was given: the `address` field of an explicit entry, else the
/// entry itself (`single_board.bmp`, `standard_ips`).
pub(super) fn address_path(b: &RawBmp) -> String {
    if b.path.ends_with(']') {
        join(&b.path, "address")
    } else {
        b.path.clone()
    }
}

pub(super) fn validate(p: &mut Problems, raw: RawConfig) -> Config {
    let mut config = raw.config;
    let resolved: Vec<Resolved> = raw.machines.into_iter().map(resolve).collect();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut bmp_addresses: HashMap<(String, u16), String> = HashMap::new();
    let mut board_ips: HashMap<String, &str> = HashMap::new();
    for r in &resolved {
        let m = &r.raw;
        if let Some(first) = names.get(m.name.as_str()) {
            p.add(
                &join(&m.path, "name"),
                format!("machine name {:?} is already used by {first}", m.name),
            );
        } else {
            names.insert(&m.name, &m.path);
        }
        for b in &r.bmps {
            // "h" and "h:17893" are the same BMP; host names compare without case.
            let Ok((host, port)) = split_address(&b.address) else {
                continue;
            };
            let key = (host.to_ascii_lowercase(), port);
            let here = format!(
                "{} (cabinet {}, frame {})",
                address_path(b),
                b.cabinet,
                b.frame
            );
            if let Some(first) = bmp_addresses.get(&key) {
                p.add(
                    &address_path(b),
                    format!("BMP address {:?} is already used by {first}", b.address),
                );
            } else {
                bmp_addresses.insert(key, here);
            }
        }
        for b in &r.boards {
            let ip = b.ip.as_deref().unwrap_or_default();
            if let Some(first) = board_ips.get(&ip.to_ascii_lowercase()) {
                p.add(
                    &b.ip_path,
                    format!("board IP {ip:?} is already used by {first}"),
                );
            } else {
                board_ips.insert(ip.to_ascii_lowercase(), &b.ip_path);
            }
        }
        if let Some(mc) = validate_machine(p, r) {
            config.machines.push(mc);
        }
    }
    config
}
