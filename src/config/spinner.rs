//! The `spinner_csv` shorthand: board locations read from a SpiNNer
//! `spinner-ethernet-chips` CSV file (the one place configuration reading touches a second
//! file).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::raw::RawBoard;
use super::*;

/// Reads a `spinner-ethernet-chips` CSV as the original's `board_locations_from_spinner`:
/// each row gives the chip coordinate of a board's Ethernet chip and its (cabinet, frame,
/// board); the machine's size in triads is inferred from the largest chip coordinates
/// (`max // 12 + 1`), and each chip is converted to the board holding it with
/// [`chip_to_board`](crate::core::coordinates::chip_to_board) on a machine of that size.
pub(super) fn spinner_csv(p: &mut Problems, file: &Path, path: &str) -> Option<Vec<RawBoard>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            p.add(path, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    let clean = |s: &str| s.trim().trim_matches('"').trim().to_string();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        p.add(
            path,
            format!(
                "{} is empty (expected a header line naming board,cabinet,frame,x,y)",
                file.display()
            ),
        );
        return None;
    };
    let columns: Vec<String> = header.split(',').map(clean).collect();
    let mut col = BTreeMap::new();
    for name in ["board", "cabinet", "frame", "x", "y"] {
        match columns.iter().position(|c| c == name) {
            Some(i) => {
                col.insert(name, i);
            }
            None => p.add(
                path,
                format!("{}: the header line has no column {name:?}", file.display()),
            ),
        }
    }
    if col.len() < 5 {
        return None;
    }
    let before = p.0.len();
    // (chip x, chip y) -> (line path, cabinet, frame, board), in file order.
    let mut chips: Vec<((u32, u32), String, [u32; 3])> = Vec::new();
    let mut seen: HashMap<(u32, u32), String> = HashMap::new();
    for (n, line) in lines {
        let line_path = format!("{path}:{}", n + 1);
        let fields: Vec<String> = line.split(',').map(clean).collect();
        let mut get = |name: &str| -> Option<u32> {
            let text = fields.get(col[name]).map(String::as_str).unwrap_or("");
            match text.parse::<u32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    p.add(
                        &line_path,
                        format!("column {name:?}: expected a non-negative integer, found {text:?}"),
                    );
                    None
                }
            }
        };
        let (b, c, f, x, y) = (
            get("board"),
            get("cabinet"),
            get("frame"),
            get("x"),
            get("y"),
        );
        let (Some(b), Some(c), Some(f), Some(x), Some(y)) = (b, c, f, x, y) else {
            continue;
        };
        if let Some(first) = seen.get(&(x, y)) {
            p.add(
                &line_path,
                format!("chip ({x}, {y}) is already given at {first}"),
            );
            continue;
        }
        seen.insert((x, y), line_path.clone());
        chips.push(((x, y), line_path, [c, f, b]));
    }
    if p.0.len() != before {
        return None;
    }
    let max_x = chips.iter().map(|((x, _), _, _)| *x).max().unwrap_or(0);
    let max_y = chips.iter().map(|((_, y), _, _)| *y).max().unwrap_or(0);
    let w_chips = (i64::from(max_x) / 12 + 1) * 12;
    let h_chips = (i64::from(max_y) / 12 + 1) * 12;
    let mut by_board: HashMap<Board, String> = HashMap::new();
    let mut out = Vec::new();
    for ((x, y), line_path, [c, f, b]) in chips {
        let logical =
            crate::core::coordinates::chip_to_board(i64::from(x), i64::from(y), w_chips, h_chips);
        // The original's dictionary would silently keep the last of two such rows.
        if let Some(first) = by_board.get(&logical) {
            p.add(
                &line_path,
                format!("chip ({x}, {y}) is on board {logical}, already given at {first}"),
            );
            continue;
        }
        by_board.insert(logical, line_path.clone());
        out.push(RawBoard {
            path: line_path.clone(),
            ip_path: line_path,
            logical,
            cabinet: c,
            frame: f,
            board: b,
            ip: None,
        });
    }
    Some(out)
}
