//! The board allocator of one machine, exactly as the original's `Allocator` and
//! `_CandidateFilter`.
//!
//! Requests come in three shapes: a rectangle of triads, "at least n boards" (rounded up to
//! triads and shaped by [`area_to_rect`]), or one board (any, or a specific one). Single boards
//! are packed into triads taken from the pack tree for that purpose. The free boards of such a
//! triad are a CPython `set` in the original, and "any board" is its `set.pop()`, whose answer
//! depends on the set's history: they are a [`PySet`] here, so that the same commands give
//! the same boards (journals written before that model chose the lowest z: see [`PopRule`]). Every
//! candidate rectangle is checked by a filter that walks the working, reachable boards from
//! its bottom-left board and classifies their links, enforcing the dead-board and dead-link
//! limits and the torus requirement.
//!
//! Freed allocations are held back for `seconds_before_free` (a deadline in event time, not a
//! timer) so that boards just powered off are not handed straight to someone else.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::area_to_rect::area_to_rect;
use super::coordinates::{board_down_link, Board, Link, WrapAround};
use super::pack_tree::PackTree;
use super::pyset::PySet;
use super::types::TimeUs;

/// What a job asks the allocator for, with its constraints.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocRequest {
    /// The shape.
    pub shape: Shape,
    /// Aspect-ratio bound (n-boards shape only).
    pub min_ratio: f64,
    /// Dead boards tolerated (`None`: any, as long as the bottom-left board works).
    pub max_dead_boards: Option<i64>,
    /// Dead links tolerated (`None`: any).
    pub max_dead_links: Option<i64>,
    /// Only a torus will do.
    pub require_torus: bool,
}

/// The shape of an allocation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Any single board.
    AnyBoard,
    /// At least this many boards.
    Boards(i64),
    /// A block of w×h triads.
    Triads(i64, i64),
    /// This specific board.
    Board(i64, i64, i64),
}

/// How to free an allocation later: its kind and origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllocHandle {
    /// A block of triads with this bottom-left triad.
    Triads {
        /// Triad x.
        x: u32,
        /// Triad y.
        y: u32,
    },
    /// One board taken from a single-board triad.
    Board(Board),
}

/// A successful allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// How to free it.
    pub handle: AllocHandle,
    /// The working boards, sorted.
    pub boards: Vec<Board>,
    /// The links leaving the allocation (to be stopped), sorted.
    pub periphery: Vec<(Board, Link)>,
    /// Which wrap-around links the allocation contains.
    pub torus: WrapAround,
}

/// How "any free board of a single-board triad" is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PopRule {
    /// The lowest free z: what this server did before it modelled CPython's sets. Kept so that
    /// a journal written then replays to exactly the boards its clients were given; the
    /// default for state decoded from such a snapshot.
    #[default]
    Smallest,
    /// CPython 3.11's `set.pop()`, as the original server: the same boards, board for board.
    CPython,
}

impl PopRule {
    /// The rule this version applies (see [`crate::Event::Rules`]).
    pub const CURRENT: PopRule = PopRule::CPython;
}

/// One machine's allocator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Allocator {
    width: u32,
    height: u32,
    dead_boards: BTreeSet<Board>,
    dead_links: BTreeSet<(Board, Link)>,
    seconds_before_free_us: u64,
    pack_tree: PackTree,
    /// Triads taken for single boards that still have free boards, in the original's dict
    /// insertion order (which decides the triad used next): a triad is appended when it is
    /// taken, and again when a full one gets a board back. Each holds its free z indices as
    /// the original's Python set does, history and all (snapshots written before the set model
    /// hold plain sorted lists here, which decode as fresh sets).
    single_board_triads: Vec<((u32, u32), PySet)>,
    /// Triads taken for single boards with no free board left.
    full_single_board_triads: BTreeSet<(u32, u32)>,
    /// Single boards still allocated that a configuration change has since declared dead
    /// (they are in no free set, and must not be counted free if they come back to life).
    #[serde(default)]
    dead_allocated: BTreeSet<Board>,
    /// How a board is picked from a single-board triad's free set (state from before the
    /// rule existed picked the lowest z).
    #[serde(default)]
    pop_rule: PopRule,
    /// Freed allocations waiting for their release time, oldest first.
    to_free: VecDeque<(TimeUs, AllocHandle)>,
    /// Answers of [`Allocator::alloc_possible`] already computed. That check depends only on
    /// the request and the machine's static description (size, dead boards, dead links), never
    /// on what is allocated, so its answers stay valid until [`Allocator::set_dead`]. Every
    /// `create_job` asks it (up to four candidate checks), and a facility asks for the same
    /// few shapes over and over. Derived state: not in snapshots, equal in comparisons.
    #[serde(skip)]
    possible: PossibleCache,
}

/// Memoised possibility answers, keyed by the request (see [`Allocator::possible`]).
#[derive(Clone, Debug, Default)]
struct PossibleCache(BTreeMap<PossibleKey, bool>);

/// A request as the possibility check sees it (`min_ratio` by its bits: any two requests with
/// the same bits get the same answer).
type PossibleKey = (u8, i64, i64, u64, Option<i64>, Option<i64>, bool);

/// Entries kept before the cache starts over (requests come from clients: bound the memory).
const POSSIBLE_CACHE_ENTRIES: usize = 4096;

impl PartialEq for PossibleCache {
    /// A cache never makes two allocators different.
    fn eq(&self, _: &PossibleCache) -> bool {
        true
    }
}

impl Allocator {
    /// An empty allocator for a `width`x`height` triad machine.
    pub fn new(
        width: u32,
        height: u32,
        dead_boards: BTreeSet<Board>,
        dead_links: BTreeSet<(Board, Link)>,
        seconds_before_free_us: u64,
    ) -> Allocator {
        Allocator {
            width,
            height,
            dead_boards,
            dead_links,
            seconds_before_free_us,
            pack_tree: PackTree::new(0, 0, width, height),
            single_board_triads: Vec::new(),
            full_single_board_triads: BTreeSet::new(),
            dead_allocated: BTreeSet::new(),
            pop_rule: PopRule::CURRENT,
            to_free: VecDeque::new(),
            possible: PossibleCache::default(),
        }
    }

    /// Replace the dead boards and links (a minor configuration change); running allocations
    /// are untouched.
    ///
    /// The free sets of the single-board triads follow the change: a board that died is no
    /// longer free (else it would be handed out), and a board that came back is free (else
    /// its triad could never be given back to the pack tree). A triad's set is changed in
    /// place (discards, then adds in ascending order), so its history carries on as the
    /// original's set would have had the same boards been taken and given back.
    pub fn set_dead(&mut self, dead_boards: BTreeSet<Board>, dead_links: BTreeSet<(Board, Link)>) {
        let old_live: BTreeMap<(u32, u32), BTreeSet<u32>> = self
            .single_board_triads
            .iter()
            .map(|(xy, _)| *xy)
            .chain(self.full_single_board_triads.iter().copied())
            .map(|(x, y)| ((x, y), self.live_zs(x, y)))
            .collect();
        self.dead_boards = dead_boards;
        self.dead_links = dead_links;
        self.possible.0.clear();
        // Which boards of each single-board triad are allocated, before and after the change.
        let allocated = |t: &Self, (x, y): (u32, u32), free: &BTreeSet<u32>| -> BTreeSet<u32> {
            let mut a: BTreeSet<u32> = old_live[&(x, y)].difference(free).copied().collect();
            a.extend(
                t.dead_allocated
                    .iter()
                    .filter(|b| (b.x, b.y) == (x, y))
                    .map(|b| b.z),
            );
            a
        };
        let mut list = Vec::new();
        let mut now_full = Vec::new();
        let mut dead_allocated = BTreeSet::new();
        for (xy, mut set) in std::mem::take(&mut self.single_board_triads) {
            let had = set.to_btree();
            let a = allocated(self, xy, &had);
            let free: BTreeSet<u32> = self.live_zs(xy.0, xy.1).difference(&a).copied().collect();
            dead_allocated.extend(a.iter().map(|&z| Board::new(xy.0, xy.1, z)));
            if free.is_empty() {
                now_full.push(xy);
            } else {
                for &z in had.difference(&free) {
                    set.discard(z);
                }
                for &z in free.difference(&had) {
                    set.add(z);
                }
                list.push((xy, set));
            }
        }
        for &xy in &self.full_single_board_triads {
            let a = allocated(self, xy, &BTreeSet::new());
            let free: BTreeSet<u32> = self.live_zs(xy.0, xy.1).difference(&a).copied().collect();
            dead_allocated.extend(a.iter().map(|&z| Board::new(xy.0, xy.1, z)));
            if free.is_empty() {
                now_full.push(xy);
            } else {
                // No longer full: a new set, last, as on a release.
                list.push((xy, PySet::from_keys(free)));
            }
        }
        dead_allocated.retain(|b| self.dead_boards.contains(b));
        self.dead_allocated = dead_allocated;
        self.single_board_triads = list;
        self.full_single_board_triads = now_full.into_iter().collect();
    }

    /// [`Allocator::alloc_possible`], remembering the answer for the next request of the same
    /// kind.
    pub fn alloc_possible_cached(&mut self, req: &AllocRequest) -> bool {
        let (kind, a, b) = match req.shape {
            // Cheap already: no candidate check.
            Shape::AnyBoard | Shape::Board(..) => return self.alloc_possible(req),
            Shape::Boards(n) => (0, n, 0),
            Shape::Triads(w, h) => (1, w, h),
        };
        let key = (
            kind,
            a,
            b,
            req.min_ratio.to_bits(),
            req.max_dead_boards,
            req.max_dead_links,
            req.require_torus,
        );
        if let Some(&answer) = self.possible.0.get(&key) {
            return answer;
        }
        let answer = self.alloc_possible(req);
        if self.possible.0.len() >= POSSIBLE_CACHE_ENTRIES {
            self.possible.0.clear();
        }
        self.possible.0.insert(key, answer);
        answer
    }

    /// Could this request ever be met on this machine when it is idle?
    pub fn alloc_possible(&self, req: &AllocRequest) -> bool {
        let (w, h) = match req.shape {
            Shape::AnyBoard => return self.live_board_count() > 0,
            Shape::Board(x, y, z) => {
                return self.in_range(x, y, z)
                    && !self
                        .dead_boards
                        .contains(&Board::new(x as u32, y as u32, z as u32))
                    && self.live_board_count() > 0;
            }
            Shape::Triads(w, h) => {
                if w <= 0 || h <= 0 || w > self.width as i64 || h > self.height as i64 {
                    return false;
                }
                if req.require_torus && (w != self.width as i64 || h != self.height as i64) {
                    return false;
                }
                (w as u32, h as u32)
            }
            Shape::Boards(n) => {
                let Some(triads) = boards_to_triads(n) else {
                    return false;
                };
                if req.require_torus && triads != self.width as u64 * self.height as u64 {
                    return false;
                }
                let Some((w, h)) =
                    area_to_rect(triads, self.width as u64, self.height as u64, req.min_ratio)
                else {
                    return false;
                };
                (w as u32, h as u32)
            }
        };
        let expected = match req.shape {
            Shape::Boards(n) => Some(n),
            _ => None,
        };
        let mut filter = CandidateFilter::new(
            self.width,
            self.height,
            &self.dead_boards,
            &self.dead_links,
            req,
            expected,
        );
        let corners = [
            (0, 0),
            (self.width - w, 0),
            (0, self.height - h),
            (self.width - w, self.height - h),
        ];
        corners.iter().any(|&(x, y)| filter.check(x, y, w, h))
    }

    /// Try to allocate the request now (releasing any frees that are due at `now_us` first).
    pub fn alloc(&mut self, req: &AllocRequest, now_us: TimeUs) -> Option<Allocation> {
        self.check_free(now_us);
        match req.shape {
            Shape::AnyBoard => self.alloc_board(None),
            Shape::Board(x, y, z) => {
                if !self.in_range(x, y, z) {
                    return None;
                }
                self.alloc_board(Some(Board::new(x as u32, y as u32, z as u32)))
            }
            Shape::Triads(w, h) => {
                if w <= 0 || h <= 0 || w > self.width as i64 || h > self.height as i64 {
                    return None;
                }
                if req.require_torus && (w != self.width as i64 || h != self.height as i64) {
                    return None;
                }
                let mut filter = CandidateFilter::new(
                    self.width,
                    self.height,
                    &self.dead_boards,
                    &self.dead_links,
                    req,
                    None,
                );
                let placed = self.pack_tree.alloc(w as u32, h as u32, &mut |x, y, w, h| {
                    filter.check(x, y, w, h)
                });
                let (x, y) = placed?;
                Some(filter.into_allocation(AllocHandle::Triads { x, y }))
            }
            Shape::Boards(n) => {
                let triads = boards_to_triads(n)?;
                if req.require_torus && triads != self.width as u64 * self.height as u64 {
                    return None;
                }
                let mut filter = CandidateFilter::new(
                    self.width,
                    self.height,
                    &self.dead_boards,
                    &self.dead_links,
                    req,
                    Some(n),
                );
                let placed = self
                    .pack_tree
                    .alloc_area(triads, req.min_ratio, &mut |x, y, w, h| {
                        filter.check(x, y, w, h)
                    });
                let (x, y, _, _) = placed?;
                Some(filter.into_allocation(AllocHandle::Triads { x, y }))
            }
        }
    }

    fn in_range(&self, x: i64, y: i64, z: i64) -> bool {
        (0..self.width as i64).contains(&x)
            && (0..self.height as i64).contains(&y)
            && (0..3).contains(&z)
    }

    fn live_board_count(&self) -> u64 {
        self.width as u64 * self.height as u64 * 3 - self.dead_boards.len() as u64
    }

    fn live_zs(&self, x: u32, y: u32) -> BTreeSet<u32> {
        (0..3)
            .filter(|&z| !self.dead_boards.contains(&Board::new(x, y, z)))
            .collect()
    }

    /// One board, from a triad already taken for single boards if possible, else from a new
    /// triad.
    fn alloc_board(&mut self, wanted: Option<Board>) -> Option<Allocation> {
        if let Some(b) = wanted {
            if self.dead_boards.contains(&b) {
                return None;
            }
        }
        // Reuse a triad already split into single boards: the first in the original's dict
        // order, and the board its set.pop() gives.
        let reuse = match wanted {
            None => (!self.single_board_triads.is_empty()).then_some(0),
            Some(b) => self
                .single_board_triads
                .iter()
                .position(|(xy, zs)| *xy == (b.x, b.y) && zs.contains(b.z)),
        };
        if let Some(i) = reuse {
            let rule = self.pop_rule;
            let ((x, y), zs) = &mut self.single_board_triads[i];
            let (x, y) = (*x, *y);
            let z = match (wanted, rule) {
                (None, PopRule::CPython) => zs.pop().expect("non-empty free set"),
                (None, PopRule::Smallest) => zs.pop_min().expect("non-empty free set"),
                (Some(b), _) => {
                    zs.discard(b.z);
                    b.z
                }
            };
            if zs.is_empty() {
                self.single_board_triads.remove(i);
                self.full_single_board_triads.insert((x, y));
            }
            let board = Board::new(x, y, z);
            return Some(Allocation {
                handle: AllocHandle::Board(board),
                boards: vec![board],
                periphery: Link::ALL.iter().map(|&l| (board, l)).collect(),
                torus: WrapAround::NONE,
            });
        }
        // Take a new triad for single boards.
        let xy = match wanted {
            Some(b) => self.pack_tree.request(b.x, b.y)?,
            None => {
                let dead = &self.dead_boards;
                self.pack_tree.alloc(1, 1, &mut |x, y, _, _| {
                    (0..3).any(|z| !dead.contains(&Board::new(x, y, z)))
                })?
            }
        };
        let zs = self.live_zs(xy.0, xy.1);
        debug_assert!(!zs.is_empty() || wanted.is_some());
        if zs.is_empty() {
            // A requested triad with no working board: give it straight back.
            let _ = self.pack_tree.free(xy.0, xy.1);
            return None;
        }
        // `set(z for z in range(3) if (x, y, z) not in dead_boards)`: a fresh set, ascending.
        self.single_board_triads.push((xy, PySet::from_keys(zs)));
        self.alloc_board(wanted)
    }

    /// Hand an allocation back; it becomes available again `seconds_before_free` after `now_us`.
    pub fn free(&mut self, handle: AllocHandle, now_us: TimeUs) {
        self.to_free
            .push_back((now_us.saturating_add(self.seconds_before_free_us), handle));
    }

    /// Release every freed allocation whose hold-back has passed. Returns true if any was.
    pub fn check_free(&mut self, now_us: TimeUs) -> bool {
        let mut changed = false;
        while let Some(&(release_us, handle)) = self.to_free.front() {
            if release_us > now_us {
                break;
            }
            self.to_free.pop_front();
            self.release(handle);
            changed = true;
        }
        changed
    }

    /// When the next held-back allocation is due.
    pub fn next_release_us(&self) -> Option<TimeUs> {
        self.to_free.front().map(|&(t, _)| t)
    }

    fn release(&mut self, handle: AllocHandle) {
        match handle {
            AllocHandle::Triads { x, y } => {
                let freed = self.pack_tree.free(x, y);
                debug_assert!(freed.is_ok(), "freeing unallocated triads at ({x}, {y})");
            }
            AllocHandle::Board(b) => {
                let xy = (b.x, b.y);
                if self.full_single_board_triads.remove(&xy) {
                    // `single_board_triads[(x, y)] = set()`: a new key, so last in the dict.
                    self.single_board_triads.push((xy, PySet::new()));
                }
                let Some(i) = self.single_board_triads.iter().position(|(t, _)| *t == xy) else {
                    debug_assert!(false, "freeing board {b} of no single-board triad");
                    return;
                };
                let live = self.live_zs(b.x, b.y);
                // A board that died while allocated does not become free.
                if !self.dead_allocated.remove(&b) {
                    self.single_board_triads[i].1.add(b.z);
                }
                let still_dead_allocated = self.dead_allocated.iter().any(|d| (d.x, d.y) == xy);
                if self.single_board_triads[i].1.to_btree() == live && !still_dead_allocated {
                    self.single_board_triads.remove(i);
                    let freed = self.pack_tree.free(b.x, b.y);
                    debug_assert!(freed.is_ok(), "freeing unallocated triad at {xy:?}");
                } else if self.single_board_triads[i].1.is_empty() {
                    self.single_board_triads.remove(i);
                    self.full_single_board_triads.insert(xy);
                }
            }
        }
    }

    /// True if nothing is allocated or waiting to be released.
    pub fn is_idle(&self) -> bool {
        self.pack_tree.is_empty() && self.to_free.is_empty() && self.single_board_triads.is_empty()
    }

    /// The boards no job may be given (dead, drained, unreachable), as last set.
    pub fn dead_boards(&self) -> &BTreeSet<Board> {
        &self.dead_boards
    }

    /// The single-board triads with free boards and their free z indices, in use order (for
    /// tests).
    #[cfg(test)]
    pub fn single_board_triads(&self) -> Vec<((u32, u32), BTreeSet<u32>)> {
        self.single_board_triads
            .iter()
            .map(|(xy, zs)| (*xy, zs.to_btree()))
            .collect()
    }

    /// Switch how boards are picked from single-board triads (the sets themselves carry on).
    pub fn set_pop_rule(&mut self, rule: PopRule) {
        self.pop_rule = rule;
    }

    /// Every board currently allocated or held back, from the allocator's own records: the
    /// boards of allocated triad blocks, and the taken boards of single-board triads.
    pub fn boards_in_use(&self) -> BTreeSet<Board> {
        let mut used = BTreeSet::new();
        let single: BTreeMap<(u32, u32), &PySet> = self
            .single_board_triads
            .iter()
            .map(|(xy, zs)| (*xy, zs))
            .collect();
        // Every board of an allocated rectangle, dead or not: a board that died after it was
        // allocated is still held by its job.
        for (x, y, w, h) in self.pack_tree.allocations() {
            for tx in x..x + w {
                for ty in y..y + h {
                    for z in 0..3 {
                        let free_single = single.get(&(tx, ty)).is_some_and(|zs| zs.contains(z));
                        if !free_single {
                            used.insert(Board::new(tx, ty, z));
                        }
                    }
                }
            }
        }
        used
    }

    /// Check internal consistency.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pack_tree.check_invariants()?;
        let allocated: BTreeSet<(u32, u32)> = self
            .pack_tree
            .allocations()
            .into_iter()
            .filter(|&(_, _, w, h)| w == 1 && h == 1)
            .map(|(x, y, _, _)| (x, y))
            .collect();
        for ((x, y), zs) in &self.single_board_triads {
            if !allocated.contains(&(*x, *y)) {
                return Err(format!(
                    "single-board triad ({x}, {y}) not allocated in the tree"
                ));
            }
            zs.check()
                .map_err(|e| format!("single-board triad ({x}, {y}): {e}"))?;
            if zs.is_empty() || !zs.to_btree().is_subset(&self.live_zs(*x, *y)) {
                return Err(format!("single-board triad ({x}, {y}) has free set {zs:?}"));
            }
            if self.full_single_board_triads.contains(&(*x, *y)) {
                return Err(format!("triad ({x}, {y}) is both full and not"));
            }
        }
        if let Some(b) = self.dead_allocated.iter().find(|b| {
            !self.dead_boards.contains(b)
                || !(self.full_single_board_triads.contains(&(b.x, b.y))
                    || self
                        .single_board_triads
                        .iter()
                        .any(|(xy, _)| *xy == (b.x, b.y)))
        }) {
            return Err(format!(
                "dead allocated board {b} not dead or not in a single-board triad"
            ));
        }
        for (x, y) in &self.full_single_board_triads {
            if !allocated.contains(&(*x, *y)) {
                return Err(format!("full single-board triad ({x}, {y}) not allocated"));
            }
        }
        if self
            .to_free
            .iter()
            .zip(self.to_free.iter().skip(1))
            .any(|(a, b)| a.0 > b.0)
        {
            return Err("to_free is not in release order".into());
        }
        Ok(())
    }
}

/// `ceil(n / 3)` triads for n boards, or `None` when n ≤ 0.
fn boards_to_triads(n: i64) -> Option<u64> {
    (n > 0).then(|| (n as u64).div_ceil(3))
}

/// A set of boards inside one rectangle of triads (no wrap-around), as a bitmap indexed
/// `((b.x - x) * h + (b.y - y)) * 3 + b.z`, so iterating it visits boards in `Board` order.
struct RectBoards {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    bits: Vec<bool>,
    len: usize,
}

impl RectBoards {
    fn new(x: u32, y: u32, w: u32, h: u32) -> RectBoards {
        RectBoards {
            x,
            y,
            w,
            h,
            bits: vec![false; w as usize * h as usize * 3],
            len: 0,
        }
    }

    fn inside(&self, b: Board) -> bool {
        b.x >= self.x && b.x < self.x + self.w && b.y >= self.y && b.y < self.y + self.h
    }

    fn index(&self, b: Board) -> usize {
        ((b.x - self.x) as usize * self.h as usize + (b.y - self.y) as usize) * 3 + b.z as usize
    }

    /// Adds a board of the rectangle; false if it was already there.
    fn insert(&mut self, b: Board) -> bool {
        let i = self.index(b);
        let new = !self.bits[i];
        self.bits[i] = true;
        self.len += usize::from(new);
        new
    }

    fn contains(&self, b: Board) -> bool {
        self.inside(b) && self.bits[self.index(b)]
    }

    fn iter(&self) -> impl Iterator<Item = Board> + '_ {
        let h = self.h as usize;
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, &set)| set)
            .map(move |(i, _)| {
                let triad = i / 3;
                Board::new(
                    self.x + (triad / h) as u32,
                    self.y + (triad % h) as u32,
                    (i % 3) as u32,
                )
            })
    }
}

/// Decides whether a candidate rectangle meets a request's connectivity requirements, and
/// remembers the boards, periphery and torus of the last one it accepted.
struct CandidateFilter<'a> {
    width: u32,
    height: u32,
    dead_boards: &'a BTreeSet<Board>,
    dead_links: &'a BTreeSet<(Board, Link)>,
    max_dead_boards: Option<i64>,
    max_dead_links: Option<i64>,
    require_torus: bool,
    expected_boards: Option<i64>,
    accepted: Option<Accepted>,
}

/// The candidate a filter last accepted.
enum Accepted {
    /// A rectangle with no dead board and no dead link leaving any of its boards: every
    /// board is reachable, so its boards and periphery are built only once it is chosen.
    Whole { x: u32, y: u32, w: u32, h: u32 },
    /// Any other rectangle, already walked.
    Walked(Vec<Board>, Vec<(Board, Link)>, WrapAround),
}

/// What walking the links of a candidate's reachable boards found.
struct Walk {
    /// The boards in `Board` order.
    boards: Vec<Board>,
    /// Links leaving the boards' set, in board then link order.
    periphery: Vec<(Board, Link)>,
    torus: WrapAround,
    /// Dead links inside the set that do not wrap around the machine.
    dead_internal: i64,
    /// Dead links inside the set that wrap around.
    dead_wrap: i64,
}

impl<'a> CandidateFilter<'a> {
    fn new(
        width: u32,
        height: u32,
        dead_boards: &'a BTreeSet<Board>,
        dead_links: &'a BTreeSet<(Board, Link)>,
        req: &AllocRequest,
        expected_boards: Option<i64>,
    ) -> Self {
        CandidateFilter {
            width,
            height,
            dead_boards,
            dead_links,
            max_dead_boards: req.max_dead_boards,
            max_dead_links: req.max_dead_links,
            require_torus: req.require_torus,
            expected_boards,
            accepted: None,
        }
    }

    /// True if no board of the rectangle is dead and no dead link starts from one: then the
    /// flood fill would reach every board (the three boards of a triad are linked to each
    /// other, a triad's z = 1 board to the next triad east, its z = 2 board to the next
    /// triad north) and the walk would count no dead link.
    ///
    /// A range query per column, so the cost does not grow with the rectangle's boards.
    fn is_whole(&self, x: u32, y: u32, w: u32, h: u32) -> bool {
        (x..x + w).all(|tx| {
            let (lo, hi) = (Board::new(tx, y, 0), Board::new(tx, y + h, 0));
            self.dead_boards.range(lo..hi).next().is_none()
                && self
                    .dead_links
                    .range((lo, Link::East)..(hi, Link::East))
                    .next()
                    .is_none()
        })
    }

    /// The working boards reachable from (x, y, 0) without leaving the rectangle or crossing a
    /// dead link, as a bitmap over the rectangle (see [`RectBoards`]).
    ///
    /// A bitmap rather than a set of boards: this runs for every candidate rectangle the
    /// packer tries, and was the allocator's hot spot (spalloc-bench `core` and `replay`).
    fn reachable(&self, x: u32, y: u32, w: u32, h: u32) -> RectBoards {
        let mut boards = RectBoards::new(x, y, w, h);
        let mut to_visit = VecDeque::from([Board::new(x, y, 0)]);
        while let Some(b) = to_visit.pop_front() {
            if self.dead_boards.contains(&b) || !boards.insert(b) {
                continue;
            }
            for link in Link::ALL {
                if self.dead_links.contains(&(b, link)) {
                    continue;
                }
                let (t, _) = board_down_link(b, link, self.width, self.height);
                if boards.inside(t) {
                    to_visit.push_back(t);
                }
            }
        }
        boards
    }

    /// Classify every link of the boards: inside (wrapping or not, dead or not) or periphery.
    fn walk(&self, boards: &RectBoards) -> Walk {
        // In board order (x, then y, then z), as the sorted set this replaced iterated.
        let sorted: Vec<Board> = boards.iter().collect();
        let mut periphery = Vec::new();
        let mut torus = WrapAround::NONE;
        let (mut dead_internal, mut dead_wrap) = (0i64, 0i64);
        let any_dead_links = !self.dead_links.is_empty();
        for &b in &sorted {
            for link in Link::ALL {
                let (t, wrapped) = board_down_link(b, link, self.width, self.height);
                if boards.contains(t) {
                    torus = torus.union(wrapped);
                    if any_dead_links && self.dead_links.contains(&(b, link)) {
                        if wrapped.any() {
                            dead_wrap += 1;
                        } else {
                            dead_internal += 1;
                        }
                    }
                } else {
                    periphery.push((b, link));
                }
            }
        }
        Walk {
            boards: sorted,
            periphery,
            torus,
            dead_internal,
            dead_wrap,
        }
    }

    /// [`CandidateFilter::walk`] for a whole rectangle (see [`CandidateFilter::is_whole`]):
    /// every board is in the set and no dead link starts inside, so a link stays inside
    /// exactly when its far end lies in the rectangle. The same boards, periphery and torus,
    /// without the bitmap lookups (this runs for every block allocation).
    fn walk_whole(
        &self,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    ) -> (Vec<Board>, Vec<(Board, Link)>, WrapAround) {
        let mut boards = Vec::with_capacity(w as usize * h as usize * 3);
        // About the rectangle's perimeter (12 links for one triad): one allocation, usually.
        let mut periphery = Vec::with_capacity(6 * (w as usize + h as usize));
        let mut torus = WrapAround::NONE;
        let inside = |t: Board| t.x >= x && t.x < x + w && t.y >= y && t.y < y + h;
        for tx in x..x + w {
            for ty in y..y + h {
                for z in 0..3 {
                    let b = Board::new(tx, ty, z);
                    boards.push(b);
                    for link in Link::ALL {
                        let (t, wrapped) = board_down_link(b, link, self.width, self.height);
                        if inside(t) {
                            torus = torus.union(wrapped);
                        } else {
                            periphery.push((b, link));
                        }
                    }
                }
            }
        }
        (boards, periphery, torus)
    }

    fn check(&mut self, x: u32, y: u32, w: u32, h: u32) -> bool {
        let reached = if self.is_whole(x, y, w, h) {
            None
        } else {
            Some(self.reachable(x, y, w, h))
        };
        let len = reached
            .as_ref()
            .map_or(w as usize * h as usize * 3, |r| r.len);
        match self.max_dead_boards {
            Some(max_dead) => {
                let expected = self.expected_boards.unwrap_or(w as i64 * h as i64 * 3);
                let dead = expected - len as i64;
                if len == 0 || dead > max_dead {
                    return false;
                }
            }
            None if len == 0 => return false,
            None => {}
        }
        let Some(reached) = reached else {
            // A whole rectangle has no dead link inside to count.
            if self.max_dead_links.is_some_and(|max_links| max_links < 0) {
                return false;
            }
            if !self.require_torus {
                // The torus does not decide: accept without walking the links (done once,
                // for the rectangle chosen).
                self.accepted = Some(Accepted::Whole { x, y, w, h });
                return true;
            }
            let (boards, periphery, torus) = self.walk_whole(x, y, w, h);
            if !torus.any() {
                return false;
            }
            self.accepted = Some(Accepted::Walked(boards, periphery, torus));
            return true;
        };
        let walk = self.walk(&reached);
        if self.require_torus && !walk.torus.any() {
            return false;
        }
        if let Some(max_links) = self.max_dead_links {
            let dead = walk.dead_internal
                + if self.require_torus {
                    walk.dead_wrap
                } else {
                    0
                };
            if dead > max_links {
                return false;
            }
        }
        self.accepted = Some(Accepted::Walked(walk.boards, walk.periphery, walk.torus));
        true
    }

    fn into_allocation(mut self, handle: AllocHandle) -> Allocation {
        let (boards, periphery, torus) = match self.accepted.take() {
            Some(Accepted::Whole { x, y, w, h }) => self.walk_whole(x, y, w, h),
            Some(Accepted::Walked(boards, periphery, torus)) => (boards, periphery, torus),
            None => panic!("no accepted candidate"),
        };
        Allocation {
            handle,
            boards,
            periphery,
            torus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(shape: Shape) -> AllocRequest {
        AllocRequest {
            shape,
            min_ratio: 0.0,
            max_dead_boards: None,
            max_dead_links: None,
            require_torus: false,
        }
    }

    fn allocator(
        w: u32,
        h: u32,
        dead: &[(u32, u32, u32)],
        links: &[(u32, u32, u32, Link)],
    ) -> Allocator {
        Allocator::new(
            w,
            h,
            dead.iter().map(|&(x, y, z)| Board::new(x, y, z)).collect(),
            links
                .iter()
                .map(|&(x, y, z, l)| (Board::new(x, y, z), l))
                .collect(),
            0,
        )
    }

    fn one(a: &mut Allocator) -> Option<(u32, u32, u32)> {
        a.alloc(&req(Shape::AnyBoard), 0).map(|al| {
            let b = al.boards[0];
            (b.x, b.y, b.z)
        })
    }

    #[test]
    fn single_boards_are_packed_into_triads() {
        let mut a = allocator(2, 1, &[], &[]);
        let got: Vec<_> = (0..7).map(|_| one(&mut a)).collect();
        assert_eq!(
            got,
            vec![
                Some((0, 0, 0)),
                Some((0, 0, 1)),
                Some((0, 0, 2)),
                Some((1, 0, 0)),
                Some((1, 0, 1)),
                Some((1, 0, 2)),
                None
            ]
        );
        a.check_invariants().unwrap();
        let mut a = allocator(2, 1, &[(1, 0, 1), (0, 0, 0), (0, 0, 1), (0, 0, 2)], &[]);
        let got: Vec<_> = (0..3).map(|_| one(&mut a)).collect();
        assert_eq!(got, vec![Some((1, 0, 0)), Some((1, 0, 2)), None]);
    }

    /// The case: a triad partly freed and taken again. CPython's `s = {0, 1, 2};
    /// s.pop(); s.pop(); s.add(0); s.pop()` gives 2, so the original hands out board 2.
    #[test]
    fn boards_of_a_partly_freed_triad_follow_cpython_set_pop() {
        for (rule, want) in [(PopRule::CPython, [2, 0]), (PopRule::Smallest, [0, 2])] {
            let mut a = allocator(1, 1, &[], &[]);
            a.set_pop_rule(rule);
            assert_eq!(one(&mut a), Some((0, 0, 0)));
            assert_eq!(one(&mut a), Some((0, 0, 1)));
            a.free(AllocHandle::Board(Board::new(0, 0, 0)), 5);
            assert!(a.check_free(5));
            assert_eq!(one(&mut a), Some((0, 0, want[0])), "{rule:?}");
            assert_eq!(one(&mut a), Some((0, 0, want[1])), "{rule:?}");
            assert_eq!(one(&mut a), None);
            a.check_invariants().unwrap();
        }
    }

    /// A full triad that gets boards back starts a new set (`set()` then `.add(z)`), last in
    /// the dict: here z 2 then z 0 come back, and the table's slot order gives 0 first.
    #[test]
    fn a_full_triad_given_boards_back_starts_a_new_set_at_the_end() {
        let mut a = allocator(2, 1, &[], &[]);
        for _ in 0..4 {
            one(&mut a);
        }
        // Triad (0, 0) is full, (1, 0) has {1, 2} free.
        a.free(AllocHandle::Board(Board::new(0, 0, 2)), 0);
        a.free(AllocHandle::Board(Board::new(0, 0, 0)), 0);
        a.check_free(0);
        assert_eq!(
            a.single_board_triads(),
            vec![
                ((1, 0), BTreeSet::from([1, 2])),
                ((0, 0), BTreeSet::from([0, 2]))
            ]
        );
        let got: Vec<_> = (0..5).map(|_| one(&mut a)).collect();
        assert_eq!(
            got,
            vec![
                Some((1, 0, 1)),
                Some((1, 0, 2)),
                Some((0, 0, 0)),
                Some((0, 0, 2)),
                None
            ]
        );
    }

    #[test]
    fn single_board_periphery_is_all_six_links() {
        let mut a = allocator(2, 1, &[], &[]);
        let al = a.alloc(&req(Shape::AnyBoard), 0).unwrap();
        assert_eq!(al.periphery.len(), 6);
        assert_eq!(al.torus, WrapAround::NONE);
        assert_eq!(al.handle, AllocHandle::Board(Board::new(0, 0, 0)));
    }

    #[test]
    fn freed_single_boards_return_their_triad() {
        // Distilled case 16: Allocator(2,1, dead={(0,0,1)}) with every board taken.
        let mut a = Allocator::new(2, 1, [Board::new(0, 0, 1)].into(), BTreeSet::new(), 10);
        let mut got = Vec::new();
        while let Some(al) = a.alloc(&req(Shape::AnyBoard), 0) {
            got.push(al.handle);
        }
        assert_eq!(got.len(), 5);
        a.free(AllocHandle::Board(Board::new(0, 0, 0)), 100);
        assert!(!a.check_free(109));
        assert!(a.check_free(110));
        assert_eq!(a.single_board_triads(), vec![((0, 0), BTreeSet::from([0]))]);
        a.free(AllocHandle::Board(Board::new(0, 0, 2)), 200);
        a.check_free(210);
        assert!(a.single_board_triads().is_empty());
        // The triad went back to the pack tree: a 1x1 triad block fits there again.
        let al = a.alloc(&req(Shape::Triads(1, 1)), 300).unwrap();
        assert_eq!(al.handle, AllocHandle::Triads { x: 0, y: 0 });
        a.check_invariants().unwrap();
    }

    #[test]
    fn specific_boards() {
        let mut a = allocator(2, 2, &[(1, 1, 1)], &[]);
        assert!(a.alloc_possible(&req(Shape::Board(1, 1, 0))));
        assert!(!a.alloc_possible(&req(Shape::Board(1, 1, 1))));
        assert!(!a.alloc_possible(&req(Shape::Board(2, 0, 0))));
        assert!(!a.alloc_possible(&req(Shape::Board(0, 0, 3))));
        assert!(!a.alloc_possible(&req(Shape::Board(-1, 0, 0))));
        let b = a.alloc(&req(Shape::Board(1, 1, 2)), 0).unwrap();
        assert_eq!(b.boards, vec![Board::new(1, 1, 2)]);
        assert!(a.alloc(&req(Shape::Board(1, 1, 2)), 0).is_none());
        assert!(a.alloc(&req(Shape::Board(1, 1, 1)), 0).is_none());
        // Any board now comes from the same triad first.
        assert_eq!(one(&mut a), Some((1, 1, 0)));
        // The triad is full: a specific board in it fails, one elsewhere works.
        assert!(a.alloc(&req(Shape::Board(1, 1, 0)), 0).is_none());
        assert!(a.alloc(&req(Shape::Board(0, 1, 1)), 0).is_some());
        a.check_invariants().unwrap();
    }

    #[test]
    fn n_boards_shapes() {
        let mut a = allocator(4, 2, &[], &[]);
        let al = a.alloc(&req(Shape::Boards(9)), 0).unwrap();
        assert_eq!(al.boards.len(), 12);
        let mut a = allocator(3, 2, &[], &[]);
        let al = a.alloc(&req(Shape::Boards(4)), 0).unwrap();
        assert_eq!(al.handle, AllocHandle::Triads { x: 0, y: 0 });
        assert_eq!(al.boards.len(), 6);
        assert!(al.boards.iter().all(|b| b.x == 0));
        assert_eq!(al.torus, WrapAround { x: false, y: true });
        assert_eq!(al.periphery.len(), 16);
    }

    #[test]
    fn over_allocation_compensates_for_dead_boards() {
        let a = allocator(4, 2, &[(0, 0, 2)], &[]);
        let mut r = req(Shape::Boards(24));
        r.max_dead_boards = Some(0);
        assert!(!a.alloc_possible(&r));
        r.shape = Shape::Boards(23);
        assert!(a.alloc_possible(&r));
        let mut a = a;
        assert_eq!(a.alloc(&r, 0).unwrap().boards.len(), 23);
    }

    #[test]
    fn torus_requests() {
        let mut a = allocator(3, 4, &[], &[]);
        let mut r = req(Shape::Triads(3, 4));
        r.require_torus = true;
        let al = a.alloc(&r, 0).unwrap();
        assert_eq!(al.boards.len(), 36);
        assert!(al.periphery.is_empty());
        assert_eq!(al.torus, WrapAround::BOTH);
        let a = allocator(3, 4, &[], &[]);
        for (w, h) in [(1, 2), (3, 2), (2, 4)] {
            r.shape = Shape::Triads(w, h);
            assert!(!a.alloc_possible(&r), "{w}x{h}");
        }
        let a = allocator(9, 10, &[], &[]);
        r.shape = Shape::Triads(9, 10);
        assert!(a.alloc_possible(&r));
        r.shape = Shape::Triads(1, 1);
        assert!(!a.alloc_possible(&r));
        let a = allocator(9, 10, &[(3, 2, 1)], &[]);
        let mut n = req(Shape::Boards(270));
        n.min_ratio = 1.0;
        assert!(!a.alloc_possible(&n));
        n.min_ratio = 0.0;
        assert!(a.alloc_possible(&n));
        n.shape = Shape::Boards(271);
        assert!(!a.alloc_possible(&n));
        assert!(!a.alloc_possible(&req(Shape::Board(3, 2, 1))));
        assert!(a.alloc_possible(&req(Shape::Board(0, 0, 0))));
    }

    #[test]
    fn dead_links_count_only_inside() {
        // Distilled case 14 (test_call_too_many_dead_links), on a 10x9 machine.
        for require_torus in [false, true] {
            for dead_on_torus in [false, true] {
                let link = if dead_on_torus {
                    Link::West
                } else {
                    Link::North
                };
                let a = allocator(10, 9, &[], &[(0, 0, 0, link)]);
                let mut r = req(Shape::Triads(1, 1));
                r.max_dead_boards = Some(0);
                r.max_dead_links = Some(0);
                r.require_torus = require_torus;
                let mut cf = CandidateFilter::new(10, 9, &a.dead_boards, &a.dead_links, &r, None);
                let (w, h) = if require_torus { (10, 9) } else { (1, 1) };
                let expected = !require_torus && dead_on_torus;
                assert_eq!(
                    cf.check(0, 0, w, h),
                    expected,
                    "{require_torus} {dead_on_torus}"
                );
            }
        }
    }

    #[test]
    fn bottom_left_board_must_work() {
        // Distilled case 15.
        for max in [Some(0), Some(3), None] {
            let a = allocator(1, 1, &[(0, 0, 0)], &[]);
            let mut r = req(Shape::Triads(1, 1));
            r.max_dead_boards = max;
            assert!(!a.alloc_possible(&r), "{max:?}");
        }
        let a = allocator(1, 1, &[(0, 0, 2)], &[]);
        for (n, ok) in [(1, true), (2, true), (3, false)] {
            let mut r = req(Shape::Boards(n));
            r.max_dead_boards = Some(0);
            // n = 1 is a Boards(1) here, not AnyBoard: the triad path with expected_boards.
            assert_eq!(a.alloc_possible(&r), ok, "n = {n}");
        }
    }

    #[test]
    fn frees_are_held_back_until_their_deadline() {
        let mut a = Allocator::new(1, 1, BTreeSet::new(), BTreeSet::new(), 2_000_000);
        let al = a.alloc(&req(Shape::Triads(1, 1)), 0).unwrap();
        assert!(a.alloc(&req(Shape::Triads(1, 1)), 0).is_none());
        a.free(al.handle, 1_000_000);
        assert_eq!(a.next_release_us(), Some(3_000_000));
        assert!(a.alloc(&req(Shape::Triads(1, 1)), 2_999_999).is_none());
        assert!(a.alloc(&req(Shape::Triads(1, 1)), 3_000_000).is_some());
    }

    #[test]
    fn cached_possibility_matches_the_check_and_follows_dead_changes() {
        let mut a = allocator(4, 3, &[(1, 1, 0), (3, 2, 2)], &[(0, 0, 0, Link::North)]);
        let mut requests = Vec::new();
        for shape in [
            Shape::Boards(5),
            Shape::Boards(36),
            Shape::Triads(2, 2),
            Shape::Triads(4, 3),
            Shape::Triads(1, 1),
        ] {
            for (max_dead_boards, max_dead_links, require_torus) in [
                (None, None, false),
                (Some(0), Some(0), false),
                (Some(1), None, true),
                (Some(-1), Some(-1), false),
            ] {
                requests.push(AllocRequest {
                    shape,
                    min_ratio: 0.5,
                    max_dead_boards,
                    max_dead_links,
                    require_torus,
                });
            }
        }
        for _ in 0..2 {
            for r in &requests {
                assert_eq!(a.alloc_possible_cached(r), a.alloc_possible(r), "{r:?}");
            }
        }
        a.set_dead(BTreeSet::new(), BTreeSet::new());
        for r in &requests {
            assert_eq!(a.alloc_possible_cached(r), a.alloc_possible(r), "{r:?}");
        }
    }

    #[test]
    fn whole_rectangles_reach_every_board() {
        // The filter's shortcut: a rectangle with no dead board and no dead link from inside
        // is exactly what the flood fill and link walk would find.
        let a = allocator(
            5,
            4,
            &[(1, 1, 0), (3, 2, 2)],
            &[(0, 0, 0, Link::North), (4, 3, 1, Link::East)],
        );
        let r = req(Shape::Triads(1, 1));
        let cf = CandidateFilter::new(5, 4, &a.dead_boards, &a.dead_links, &r, None);
        let mut whole = 0;
        for (x, y) in (0..5).flat_map(|x| (0..4).map(move |y| (x, y))) {
            for (w, h) in (1..=5 - x).flat_map(|w| (1..=4 - y).map(move |h| (w, h))) {
                if !cf.is_whole(x, y, w, h) {
                    continue;
                }
                whole += 1;
                let reached = cf.reachable(x, y, w, h);
                assert_eq!(reached.len, (w * h * 3) as usize, "{x},{y} {w}x{h}");
                let walk = cf.walk(&reached);
                assert_eq!((walk.dead_internal, walk.dead_wrap), (0, 0));
                let (boards, periphery, torus) = cf.walk_whole(x, y, w, h);
                assert_eq!(boards, walk.boards);
                assert_eq!(periphery, walk.periphery);
                assert_eq!(torus, walk.torus);
            }
        }
        assert!(whole > 20, "{whole}");
        assert!(!cf.is_whole(0, 0, 1, 1));
        assert!(!cf.is_whole(3, 2, 1, 1));
        assert!(cf.is_whole(1, 2, 2, 2));
    }

    #[test]
    fn invalid_shapes_are_impossible() {
        let a = allocator(2, 2, &[], &[]);
        for s in [
            Shape::Boards(0),
            Shape::Boards(-3),
            Shape::Triads(0, 1),
            Shape::Triads(3, 1),
            Shape::Boards(13),
        ] {
            assert!(!a.alloc_possible(&req(s)), "{s:?}");
        }
    }
}
