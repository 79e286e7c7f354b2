//! Board and chip coordinates of a SpiNN-5 machine, and the links between boards.
//!
//! A machine is a rectangle of *triads*; each triad holds three boards (z = 0, 1, 2) whose
//! Ethernet chips sit at chip offsets (0,0), (8,4) and (4,8) of the triad's 12x12 chips. The
//! boards form a hexagonal torus; `board_down_link` says where each of a board's six links
//! lands, and whether it wrapped around the machine's edge.

use serde::{Deserialize, Serialize};

/// Logical board coordinate: triad (x, y) and board z within the triad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Board {
    /// Triad column.
    pub x: u32,
    /// Triad row.
    pub y: u32,
    /// Board within the triad, 0..3.
    pub z: u32,
}

impl Board {
    /// A board coordinate.
    pub const fn new(x: u32, y: u32, z: u32) -> Board {
        Board { x, y, z }
    }
}

impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}, {})", self.x, self.y, self.z)
    }
}

/// The six links of a board, numbered as the protocol sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Link {
    /// 0
    East,
    /// 1
    NorthEast,
    /// 2
    North,
    /// 3
    West,
    /// 4
    SouthWest,
    /// 5
    South,
}

impl Link {
    /// All links in protocol order.
    pub const ALL: [Link; 6] = [
        Link::East,
        Link::NorthEast,
        Link::North,
        Link::West,
        Link::SouthWest,
        Link::South,
    ];

    /// The protocol number of the link (east = 0 … south = 5).
    pub fn number(self) -> u32 {
        self as u32
    }

    /// The link with the given protocol number.
    pub fn from_number(n: u64) -> Option<Link> {
        Link::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The link's name as the configuration file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Link::East => "east",
            Link::NorthEast => "north_east",
            Link::North => "north",
            Link::West => "west",
            Link::SouthWest => "south_west",
            Link::South => "south",
        }
    }

    /// The link with the given configuration-file name.
    pub fn from_name(name: &str) -> Option<Link> {
        Link::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The link pointing the other way.
    pub fn opposite(self) -> Link {
        Link::ALL[(self as usize + 3) % 6]
    }
}

/// Which machine edges a link (or an allocation) wraps around.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WrapAround {
    /// Wraps around the left/right edge.
    pub x: bool,
    /// Wraps around the top/bottom edge.
    pub y: bool,
}

impl WrapAround {
    /// No wrap-around.
    pub const NONE: WrapAround = WrapAround { x: false, y: false };
    /// Both axes wrap (a full torus).
    pub const BOTH: WrapAround = WrapAround { x: true, y: true };

    /// The union of two wrap-arounds.
    pub fn union(self, other: WrapAround) -> WrapAround {
        WrapAround {
            x: self.x || other.x,
            y: self.y || other.y,
        }
    }

    /// True if either axis wraps.
    pub fn any(self) -> bool {
        self.x || self.y
    }
}

/// `(dx, dy, dz)` of each link, indexed by `[z][link]` (the original's `link_to_vector`).
const LINK_VECTORS: [[(i32, i32, i32); 6]; 3] = [
    // z = 0: E, NE, N, W, SW, S
    [
        (0, -1, 2),
        (0, 0, 1),
        (0, 0, 2),
        (-1, 0, 1),
        (-1, -1, 2),
        (-1, -1, 1),
    ],
    // z = 1
    [
        (1, 0, -1),
        (1, 0, 1),
        (1, 1, -1),
        (0, 0, 1),
        (0, 0, -1),
        (0, -1, 1),
    ],
    // z = 2
    [
        (0, 0, -1),
        (1, 1, -2),
        (0, 1, -1),
        (0, 1, -2),
        (-1, 0, -1),
        (0, 0, -2),
    ],
];

/// The vector a link moves along from a board with the given z.
pub fn link_to_vector(z: u32, link: Link) -> (i32, i32, i32) {
    LINK_VECTORS[z as usize][link as usize]
}

/// The board at the far end of `link` from `board` on a `width`x`height` triad machine, and
/// whether the link wrapped around an edge to get there.
pub fn board_down_link(board: Board, link: Link, width: u32, height: u32) -> (Board, WrapAround) {
    debug_assert!(board.z < 3 && width > 0 && height > 0);
    let (dx, dy, dz) = link_to_vector(board.z, link);
    // A link moves at most one triad along each axis, so wrapping is one add or subtract
    // (no division: the allocator calls this for every link of every candidate board).
    let (x, wrap_x) = step_wrapping(board.x, dx, width);
    let (y, wrap_y) = step_wrapping(board.y, dy, height);
    let target = Board {
        x,
        y,
        z: (board.z as i32 + dz) as u32,
    };
    (
        target,
        WrapAround {
            x: wrap_x,
            y: wrap_y,
        },
    )
}

/// `(v + d) mod n` for `d` in -1..=1, and whether it left `0..n` to get there.
fn step_wrapping(v: u32, d: i32, n: u32) -> (u32, bool) {
    if v >= n {
        // Off the machine already: the general case.
        let t = v as i64 + d as i64;
        return (t.rem_euclid(n as i64) as u32, t >= n as i64);
    }
    match d {
        -1 if v == 0 => (n - 1, true),
        -1 => (v - 1, false),
        1 if v + 1 == n => (0, true),
        1 => (v + 1, false),
        _ => (v, false),
    }
}

/// The chip coordinate of a board's Ethernet chip, in a machine whose origin is board (0,0,0).
pub fn board_to_chip(board: Board) -> (i64, i64) {
    let (ox, oy) = match board.z {
        0 => (0, 0),
        1 => (8, 4),
        _ => (4, 8),
    };
    (12 * board.x as i64 + ox, 12 * board.y as i64 + oy)
}

/// Same as [`board_to_chip`] for signed triad offsets (used for coordinates relative to a job).
pub fn board_offset_to_chip(dx: i64, dy: i64, dz: i64) -> (i64, i64) {
    let (ox, oy) = match dz {
        1 => (8, 4),
        2 => (4, 8),
        _ => (0, 0),
    };
    (12 * dx + ox, 12 * dy + oy)
}

/// Size in chips of a block of `w`x`h` triads: wrapped axes need no extra half-board edge.
pub fn triad_dimensions_to_chips(w: u32, h: u32, torus: WrapAround) -> (u32, u32) {
    (
        12 * w + if torus.x { 0 } else { 4 },
        12 * h + if torus.y { 0 } else { 4 },
    )
}

/// Which board (0, 1 or 2) of a triad owns each chip of the triad's 12x12 area, by `[y][x]`,
/// before accounting for chips owned through wrap by neighbouring triads (see
/// [`chip_to_board`]). Rows are listed from y = 0 upwards.
const TRIAD_OWNER: [&[u8; 12]; 12] = [
    b"000002222222", // y0
    b"000000222222", // y1
    b"000000022222", // y2
    b"000000002222", // y3
    b"100000001111", // y4
    b"110000001111", // y5
    b"111000001111", // y6
    b"111100001111", // y7
    b"111122222111", // y8
    b"111122222211", // y9
    b"111122222221", // y10
    b"111122222222", // y11
];

/// The offset of a chip from its board's Ethernet chip, by position within a triad's 12x12
/// chips: `(dx, dy)` such that `ethernet = chip - (dx, dy)` (modulo the machine size).
fn ethernet_offset(cx: u32, cy: u32) -> (i64, i64) {
    let owner = TRIAD_OWNER[cy as usize][cx as usize] - b'0';
    let (ex, ey) = match owner {
        0 => (0i64, 0i64),
        1 => (8, 4),
        _ => (4, 8),
    };
    let mut dx = cx as i64 - ex;
    let mut dy = cy as i64 - ey;
    // Chips left of or below their owner's Ethernet chip belong to the copy of that board in
    // the neighbouring triad (the board of triad x-1 or y-1), reached through wrap-around.
    if dx < 0 {
        dx += 12;
    }
    if dy < 0 {
        dy += 12;
    }
    (dx, dy)
}

/// The chip's position relative to its board's Ethernet chip (spinn_machine's
/// `get_local_chip_coordinate`).
pub fn local_chip_coordinate(cx: i64, cy: i64) -> (i64, i64) {
    ethernet_offset(cx.rem_euclid(12) as u32, cy.rem_euclid(12) as u32)
}

/// The board holding chip (cx, cy) of a machine `w_chips`x`h_chips` chips in size (a full torus).
pub fn chip_to_board(cx: i64, cy: i64, w_chips: i64, h_chips: i64) -> Board {
    let (dx, dy) = local_chip_coordinate(cx, cy);
    let ex = (cx - dx).rem_euclid(w_chips);
    let ey = (cy - dy).rem_euclid(h_chips);
    let z = match (ex % 12, ey % 12) {
        (0, 0) => 0,
        (8, 4) => 1,
        _ => 2,
    };
    Board {
        x: (ex / 12) as u32,
        y: (ey / 12) as u32,
        z,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_numbers_and_opposites() {
        for (n, l) in Link::ALL.iter().enumerate() {
            assert_eq!(l.number() as usize, n);
            assert_eq!(Link::from_number(n as u64), Some(*l));
            assert_eq!(Link::from_name(l.name()), Some(*l));
            assert_eq!(l.opposite().opposite(), *l);
        }
        assert_eq!(Link::East.opposite(), Link::West);
        assert_eq!(Link::NorthEast.opposite(), Link::SouthWest);
        assert_eq!(Link::from_number(6), None);
    }

    #[test]
    fn links_are_symmetric() {
        // Following a link and then its opposite comes back, on every board of a few machines.
        for (w, h) in [(1, 1), (2, 1), (4, 2), (10, 10)] {
            for x in 0..w {
                for y in 0..h {
                    for z in 0..3 {
                        let b = Board::new(x, y, z);
                        for l in Link::ALL {
                            let (t, _) = board_down_link(b, l, w, h);
                            assert_eq!(board_down_link(t, l.opposite(), w, h).0, b);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn board_down_link_reference_cases() {
        let x = WrapAround { x: true, y: false };
        let y = WrapAround { x: false, y: true };
        let cases = [
            ((9, 8, 1), Link::NorthEast, (10, 10), (0, 8, 2), x),
            ((8, 9, 2), Link::NorthEast, (10, 10), (9, 0, 0), y),
            (
                (9, 9, 2),
                Link::NorthEast,
                (10, 10),
                (0, 0, 0),
                WrapAround::BOTH,
            ),
            ((0, 0, 0), Link::South, (1, 1), (0, 0, 1), WrapAround::BOTH),
            ((0, 0, 0), Link::East, (4, 2), (0, 1, 2), y),
            ((0, 0, 0), Link::West, (4, 2), (3, 0, 1), x),
        ];
        for ((bx, by, bz), link, (w, h), (tx, ty, tz), wrap) in cases {
            assert_eq!(
                board_down_link(Board::new(bx, by, bz), link, w, h),
                (Board::new(tx, ty, tz), wrap),
                "{bx},{by},{bz} {link:?}"
            );
        }
    }

    #[test]
    fn board_to_chip_reference_cases() {
        assert_eq!(board_to_chip(Board::new(2, 1, 1)), (32, 16));
        assert_eq!(board_to_chip(Board::new(2, 1, 2)), (28, 20));
        assert_eq!(board_to_chip(Board::new(1, 1, 1)), (20, 16));
        assert_eq!(board_to_chip(Board::new(0, 0, 0)), (0, 0));
    }

    #[test]
    fn chip_to_board_reference_cases() {
        assert_eq!(chip_to_board(5, 0, 12, 12), Board::new(0, 0, 2));
        assert_eq!(chip_to_board(47, 23, 48, 24), Board::new(3, 1, 2));
        assert_eq!(local_chip_coordinate(11, 11), (7, 3));
        assert_eq!(local_chip_coordinate(5, 0), (1, 4));
        assert_eq!(local_chip_coordinate(0, 4), (4, 0));
        assert_eq!(local_chip_coordinate(3, 11), (7, 7));
        assert_eq!(local_chip_coordinate(11, 3), (7, 7));
    }

    #[test]
    fn every_chip_of_a_board_maps_back_to_it() {
        // Each board covers exactly 48 chips; on a 4x2 torus every chip belongs to one board.
        let (w, h) = (4u32, 2u32);
        let mut counts = std::collections::BTreeMap::new();
        for cx in 0..(12 * w as i64) {
            for cy in 0..(12 * h as i64) {
                let b = chip_to_board(cx, cy, 12 * w as i64, 12 * h as i64);
                *counts.entry(b).or_insert(0) += 1;
                let (lx, ly) = local_chip_coordinate(cx, cy);
                let (ex, ey) = board_to_chip(b);
                assert_eq!(
                    ((ex + lx) % (12 * w as i64), (ey + ly) % (12 * h as i64)),
                    (cx, cy)
                );
            }
        }
        assert_eq!(counts.len(), (w * h * 3) as usize);
        assert!(counts.values().all(|&c| c == 48));
    }

    #[test]
    fn triad_dimensions_reference_cases() {
        let x = WrapAround { x: true, y: false };
        let y = WrapAround { x: false, y: true };
        assert_eq!(triad_dimensions_to_chips(1, 1, WrapAround::NONE), (16, 16));
        assert_eq!(triad_dimensions_to_chips(1, 1, x), (12, 16));
        assert_eq!(triad_dimensions_to_chips(1, 1, y), (16, 12));
        assert_eq!(triad_dimensions_to_chips(1, 1, WrapAround::BOTH), (12, 12));
        assert_eq!(triad_dimensions_to_chips(2, 1, WrapAround::NONE), (28, 16));
        assert_eq!(triad_dimensions_to_chips(2, 1, x), (24, 16));
        assert_eq!(triad_dimensions_to_chips(2, 1, y), (28, 12));
        assert_eq!(triad_dimensions_to_chips(2, 1, WrapAround::BOTH), (24, 12));
    }
}
