//! The connections a pass touched: read from, replied to, notified or closed. At the end of
//! the pass each is flushed and its registration brought up to date, once, in key order.
//!
//! A pass touches a connection a few times (read, reply, perhaps a notification), and a busy
//! pass touches dozens. Keys are pushed onto a vector and sorted once at the end, which costs
//! less than keeping a search tree ordered as they come; the vector is kept between passes,
//! so a pass allocates nothing for it.

/// A set of connection keys, gathered in any order and taken out sorted and distinct.
#[derive(Debug, Default)]
pub struct Touched {
    keys: Vec<usize>,
}

impl Touched {
    /// Note that the pass touched `key` (again, perhaps).
    pub fn insert(&mut self, key: usize) {
        // (The common repeat, a reply to the connection just read, is not even stored.)
        if self.keys.last() != Some(&key) {
            self.keys.push(key);
        }
    }

    /// Every key noted since the last call, in increasing order, each once; the set is
    /// empty afterwards (and keeps its allocation).
    pub fn drain_sorted(&mut self) -> std::vec::Drain<'_, usize> {
        self.keys.sort_unstable();
        self.keys.dedup();
        debug_assert!(self.keys.windows(2).all(|w| w[0] < w[1]));
        self.keys.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_out_sorted_and_once_and_the_set_is_emptied() {
        let mut t = Touched::default();
        for k in [5, 5, 3, 9, 3, 5, 1] {
            t.insert(k);
        }
        assert_eq!(t.drain_sorted().collect::<Vec<_>>(), vec![1, 3, 5, 9]);
        assert_eq!(t.drain_sorted().count(), 0);
        t.insert(7);
        assert_eq!(t.drain_sorted().collect::<Vec<_>>(), vec![7]);
    }
}
