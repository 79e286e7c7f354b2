//! The pack tree: a binary tree of rectangles (in triads) that hands out rectangular blocks of
//! a machine, exactly as the original's `PackTree`.
//!
//! Each node covers a rectangle; a leaf is either free or allocated, and an inner node has been
//! split in two. Allocation tries children smallest-area first and, in a free leaf, the four
//! corners in the order bottom-left, top-left, bottom-right, top-right, asking a candidate
//! filter to accept each; the accepted corner is then split off. Freeing merges two free leaf
//! children back into their parent. The same sequence of requests therefore gives the same
//! rectangles as the original server.

use serde::{Deserialize, Serialize};

/// A node of the pack tree (the root covers the whole machine).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackTree {
    /// Left edge.
    pub x: u32,
    /// Bottom edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// True if this (leaf) node is allocated.
    pub allocated: bool,
    /// The two halves after a split: (left, right) or (bottom, top).
    pub children: Option<Box<[PackTree; 2]>>,
}

/// Freeing a rectangle that was not allocated: a bug in the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeError {
    /// The origin that was freed.
    pub x: u32,
    /// The origin that was freed.
    pub y: u32,
}

impl std::fmt::Display for FreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no allocation at ({}, {}) to free", self.x, self.y)
    }
}

impl PackTree {
    /// A free tree covering `w`x`h` cells from `(x, y)`.
    pub fn new(x: u32, y: u32, w: u32, h: u32) -> PackTree {
        PackTree {
            x,
            y,
            w,
            h,
            allocated: false,
            children: None,
        }
    }

    fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }

    fn is_free_leaf(&self) -> bool {
        self.children.is_none() && !self.allocated
    }

    /// Split horizontally at row `y`: children are the part below and the part from `y` up.
    fn hsplit(&mut self, y: u32) {
        debug_assert!(self.children.is_none() && !self.allocated);
        debug_assert!(y > self.y && y < self.y + self.h);
        let below = PackTree::new(self.x, self.y, self.w, y - self.y);
        let above = PackTree::new(self.x, y, self.w, self.h - (y - self.y));
        self.children = Some(Box::new([below, above]));
    }

    /// Split vertically at column `x`: children are the part left of `x` and the rest.
    fn vsplit(&mut self, x: u32) {
        debug_assert!(self.children.is_none() && !self.allocated);
        debug_assert!(x > self.x && x < self.x + self.w);
        let left = PackTree::new(self.x, self.y, x - self.x, self.h);
        let right = PackTree::new(x, self.y, self.w - (x - self.x), self.h);
        self.children = Some(Box::new([left, right]));
    }

    /// Children indices ordered smallest area first (ties keep the first child first).
    fn child_order(children: &[PackTree; 2]) -> [usize; 2] {
        if children[1].area() < children[0].area() {
            [1, 0]
        } else {
            [0, 1]
        }
    }

    /// Allocate a `w`x`h` block, asking `filter(x, y, w, h)` to accept each candidate position.
    /// Returns the block's origin.
    pub fn alloc(
        &mut self,
        w: u32,
        h: u32,
        filter: &mut dyn FnMut(u32, u32, u32, u32) -> bool,
    ) -> Option<(u32, u32)> {
        if self.allocated || w > self.w || h > self.h || w == 0 || h == 0 {
            return None;
        }
        if let Some(children) = self.children.as_mut() {
            let order = Self::child_order(children);
            return order
                .into_iter()
                .find_map(|i| children[i].alloc(w, h, filter));
        }
        let (x0, y0) = (self.x, self.y);
        let (x1, y1) = (self.x + self.w - w, self.y + self.h - h);
        let candidates = [(x0, y0), (x0, y1), (x1, y0), (x1, y1)];
        for (i, &(x, y)) in candidates.iter().enumerate() {
            if candidates[..i].contains(&(x, y)) {
                continue;
            }
            if filter(x, y, w, h) {
                self.place(x, y, w, h);
                return Some((x, y));
            }
        }
        None
    }

    /// Mark the `w`x`h` block at `(x, y)` (a corner of this free leaf) allocated, splitting off
    /// the rest.
    fn place(&mut self, x: u32, y: u32, w: u32, h: u32) {
        debug_assert!(self.is_free_leaf());
        if self.w == w && self.h == h {
            self.allocated = true;
            return;
        }
        let (dw, dh) = (self.w - w, self.h - h);
        if dh > dw {
            self.split_off_rows(y, h);
        } else {
            self.split_off_columns(x, w);
        }
        let child = self.child_at_mut(x, y);
        if child.w != w {
            child.split_off_columns(x, w);
            child.child_at_mut(x, y).allocated = true;
        } else if child.h != h {
            child.split_off_rows(y, h);
            child.child_at_mut(x, y).allocated = true;
        } else {
            child.allocated = true;
        }
    }

    /// Split so that the rows of a block of height `h` at row `y` (bottom or top edge) form a
    /// child of their own.
    fn split_off_rows(&mut self, y: u32, h: u32) {
        self.hsplit(if y != self.y { y } else { self.y + h });
    }

    /// Split so that the columns of a block of width `w` at column `x` (left or right edge)
    /// form a child of their own.
    fn split_off_columns(&mut self, x: u32, w: u32) {
        self.vsplit(if x != self.x { x } else { self.x + w });
    }

    fn child_at_mut(&mut self, x: u32, y: u32) -> &mut PackTree {
        let children = self.children.as_mut().expect("split node");
        if children[0].contains(x, y) {
            &mut children[0]
        } else {
            &mut children[1]
        }
    }

    /// Allocate a block of about `area` cells at least as square as `min_ratio`, sized to the
    /// bounds of the first free leaf that can hold it. Returns `(x, y, w, h)`.
    pub fn alloc_area(
        &mut self,
        area: u64,
        min_ratio: f64,
        filter: &mut dyn FnMut(u32, u32, u32, u32) -> bool,
    ) -> Option<(u32, u32, u32, u32)> {
        if self.allocated || area > self.area() {
            return None;
        }
        if let Some(children) = self.children.as_mut() {
            let order = Self::child_order(children);
            return order
                .into_iter()
                .find_map(|i| children[i].alloc_area(area, min_ratio, filter));
        }
        let (w, h) =
            super::area_to_rect::area_to_rect(area, self.w as u64, self.h as u64, min_ratio)?;
        let (w, h) = (w as u32, h as u32);
        self.alloc(w, h, filter).map(|(x, y)| (x, y, w, h))
    }

    /// Allocate the single cell `(x, y)`, splitting as needed. Returns `None` if it is outside
    /// the tree or already taken.
    pub fn request(&mut self, x: u32, y: u32) -> Option<(u32, u32)> {
        if !self.contains(x, y) {
            return None;
        }
        if let Some(children) = self.children.as_mut() {
            return children[0]
                .request(x, y)
                .or_else(|| children[1].request(x, y));
        }
        if self.allocated {
            return None;
        }
        if self.w == 1 && self.h == 1 {
            self.allocated = true;
            return Some((x, y));
        }
        // Cut off the largest free margin first (ties: left, right, above, below).
        let left = x - self.x;
        let right = self.x + self.w - x - 1;
        let above = self.y + self.h - y - 1;
        let below = y - self.y;
        let largest = left.max(right).max(above).max(below);
        if left == largest {
            self.vsplit(x);
        } else if right == largest {
            self.vsplit(x + 1);
        } else if above == largest {
            self.hsplit(y + 1);
        } else {
            self.hsplit(y);
        }
        self.request(x, y)
    }

    /// Free the block whose origin is `(x, y)`, merging free siblings back together.
    pub fn free(&mut self, x: u32, y: u32) -> Result<(), FreeError> {
        let Some(children) = self.children.as_mut() else {
            if (self.x, self.y) == (x, y) && self.allocated {
                self.allocated = false;
                return Ok(());
            }
            return Err(FreeError { x, y });
        };
        let child = children
            .iter_mut()
            .find(|c| c.contains(x, y))
            .ok_or(FreeError { x, y })?;
        child.free(x, y)?;
        if children.iter().all(PackTree::is_free_leaf) {
            self.children = None;
        }
        Ok(())
    }

    /// True if nothing in the tree is allocated (and so it has no children).
    pub fn is_empty(&self) -> bool {
        self.is_free_leaf()
    }

    /// Every allocated rectangle `(x, y, w, h)`, in tree order.
    pub fn allocations(&self) -> Vec<(u32, u32, u32, u32)> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<(u32, u32, u32, u32)>) {
        match &self.children {
            Some(c) => {
                c[0].collect(out);
                c[1].collect(out);
            }
            None if self.allocated => out.push((self.x, self.y, self.w, self.h)),
            None => {}
        }
    }

    /// Check the tree's structure: children tile their parent exactly, only leaves are
    /// allocated, and no node has two free leaf children (they would have been merged).
    pub fn check_invariants(&self) -> Result<(), String> {
        let Some(c) = &self.children else {
            return Ok(());
        };
        if self.allocated {
            return Err(format!(
                "inner node at ({}, {}) is marked allocated",
                self.x, self.y
            ));
        }
        if c[0].area() + c[1].area() != self.area()
            || !self.contains(c[0].x, c[0].y)
            || !self.contains(c[1].x, c[1].y)
        {
            return Err(format!(
                "children of ({}, {}) do not tile it",
                self.x, self.y
            ));
        }
        if c.iter().all(PackTree::is_free_leaf) {
            return Err(format!(
                "node ({}, {}) has two free leaves unmerged",
                self.x, self.y
            ));
        }
        c[0].check_invariants()?;
        c[1].check_invariants()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: u32, _: u32, _: u32, _: u32) -> bool {
        true
    }

    #[test]
    fn fills_a_column_first() {
        let mut t = PackTree::new(0, 0, 4, 3);
        let got: Vec<_> = (0..5).map(|_| t.alloc(1, 1, &mut any).unwrap()).collect();
        assert_eq!(got, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]);
        t.check_invariants().unwrap();
    }

    #[test]
    fn alloc_area_sequence() {
        let mut t = PackTree::new(0, 0, 4, 3);
        assert_eq!(t.alloc_area(2, 0.0, &mut any), Some((0, 0, 1, 2)));
        assert_eq!(t.alloc_area(2, 0.0, &mut any), Some((1, 0, 2, 1)));
        assert_eq!(t.alloc_area(4, 0.0, &mut any), Some((1, 1, 2, 2)));
        let mut t = PackTree::new(0, 0, 3, 3);
        assert_eq!(t.alloc_area(6, 0.0, &mut any), Some((0, 0, 3, 2)));
        let mut t = PackTree::new(0, 0, 3, 3);
        assert_eq!(t.alloc_area(6, 1.0, &mut any), Some((0, 0, 3, 3)));
    }

    #[test]
    fn request_splits_as_the_original() {
        let mut t = PackTree::new(0, 0, 10, 10);
        assert_eq!(t.request(8, 6), Some((8, 6)));
        // Root split at x = 8; the right part at y = 6; its upper part at y = 7; then x = 9.
        let c = t.children.as_ref().unwrap();
        assert_eq!((c[0].w, c[1].x), (8, 8));
        let right = &c[1].children.as_ref().unwrap();
        assert_eq!((right[0].h, right[1].y), (6, 6));
        let upper = &right[1].children.as_ref().unwrap();
        assert_eq!((upper[0].h, upper[1].y), (1, 7));
        let cell = &upper[0].children.as_ref().unwrap();
        assert_eq!((cell[0].x, cell[0].w, cell[0].allocated), (8, 1, true));
        assert_eq!(t.alloc(2, 2, &mut any), Some((8, 7)));
        assert_eq!(t.alloc(9, 9, &mut any), None);
        assert_eq!(t.alloc(8, 8, &mut any), Some((0, 0)));
        assert_eq!(t.request(8, 6), None);
        assert_eq!(t.request(10, 0), None);
        t.check_invariants().unwrap();
    }

    #[test]
    fn corner_candidates_in_order() {
        let mut seen = Vec::new();
        let mut t = PackTree::new(0, 0, 4, 3);
        let mut filter = |x, y, _, _| {
            seen.push((x, y));
            false
        };
        assert_eq!(t.alloc(2, 2, &mut filter), None);
        assert_eq!(seen, vec![(0, 0), (0, 1), (2, 0), (2, 1)]);
        // Duplicates are skipped: a full-width block has only two distinct corners.
        seen.clear();
        let mut filter = |x, y, _, _| {
            seen.push((x, y));
            false
        };
        assert_eq!(t.alloc(4, 2, &mut filter), None);
        assert_eq!(seen, vec![(0, 0), (0, 1)]);
        // The top-right corner is accepted when it is the only one allowed.
        assert_eq!(
            t.alloc(2, 2, &mut |x, y, _, _| (x, y) == (2, 1)),
            Some((2, 1))
        );
        t.check_invariants().unwrap();
    }

    #[test]
    fn free_merges_back_to_empty() {
        let mut t = PackTree::new(0, 0, 5, 4);
        let mut origins = Vec::new();
        while let Some(xy) = t.alloc(2, 1, &mut any) {
            origins.push(xy);
        }
        assert_eq!(origins.len(), 8);
        assert_eq!(t.free(4, 3), Err(FreeError { x: 4, y: 3 }));
        for (x, y) in origins.iter().rev() {
            t.free(*x, *y).unwrap();
            t.check_invariants().unwrap();
        }
        assert!(t.is_empty());
        assert_eq!(t, PackTree::new(0, 0, 5, 4));
        assert_eq!(t.free(0, 0), Err(FreeError { x: 0, y: 0 }));
    }

    #[test]
    fn perfect_packing_of_unit_cells() {
        let mut t = PackTree::new(0, 0, 6, 5);
        let mut cells = std::collections::BTreeSet::new();
        while let Some(xy) = t.alloc(1, 1, &mut any) {
            assert!(cells.insert(xy));
        }
        assert_eq!(cells.len(), 30);
        assert_eq!(t.allocations().len(), 30);
    }
}
