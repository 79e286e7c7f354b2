//! A model of CPython 3.11's `set` of small non-negative integers, exact enough to predict
//! what `set.pop()` returns.
//!
//! The original server keeps, for each triad split into single boards, a Python `set` of the
//! z indices still free, and takes a board with `available.pop()`. CPython's `pop` does not
//! return the smallest element: it scans the hash table from a *search finger* left just past
//! the slot of the previous pop, and a removed element leaves a *dummy* in its slot until the
//! table is rebuilt. So the board handed out depends on the set's whole history
//! (`s = {0, 1, 2}; s.pop() -> 0; s.pop() -> 1; s.add(0); s.pop() -> 2`). To choose the same
//! boards as the original we keep the same table.
//!
//! What is modelled (facts of CPython 3.11's `Objects/setobject.c`, for keys whose hash is the
//! key itself, as for every int below 2**61 - 1):
//! - A new set has a table of 8 slots (`mask` 7), `fill` (active + dummy slots) 0, `used`
//!   (active slots) 0 and finger 0. `set(iterable)` adds the items in order.
//! - Probing for key k starts at slot `k & mask`; from slot i it also looks at the 9 slots that
//!   follow when `i + 9 <= mask` (linear probes), otherwise at slot i alone; then
//!   `perturb >>= 5; i = (i * 5 + 1 + perturb) & mask`, with perturb starting at k.
//! - `add` stops at the first empty slot (or at the key itself: nothing to do). If a dummy was
//!   passed on the way, the key goes into the *last* dummy passed and nothing else changes.
//!   Otherwise it goes into the empty slot, `fill` grows, and when `fill * 5 >= mask * 3` the
//!   table is rebuilt for `used * 4`.
//! - A rebuild sizes the table to the smallest power of two (at least 8) above that number; a
//!   small table with no dummy is left alone. Otherwise the active keys are re-inserted in slot
//!   order of the old table (each at the first empty slot of its probe sequence) and the
//!   dummies vanish. The finger is not reset.
//! - `remove`/`discard` turns the key's slot into a dummy (`used` shrinks, `fill` does not).
//! - `pop` scans from slot `finger & mask` upwards, wrapping, takes the first active key,
//!   leaves a dummy, and sets the finger to the slot after it.
//!
//! `tests/data/pyset-cases.jsonl` holds operation sequences recorded from real CPython 3.11
//! (by `tools/record-pyset-cases.py`); the unit tests below replay them and check every pop
//! and the iteration order after every step.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A slot holding nothing (never used since the last rebuild).
const EMPTY: i64 = -1;
/// A slot whose key was removed.
const DUMMY: i64 = -2;
/// CPython's `PySet_MINSIZE`.
const MIN_SIZE: usize = 8;
/// CPython's `LINEAR_PROBES`.
const LINEAR_PROBES: usize = 9;
/// CPython's `PERTURB_SHIFT`.
const PERTURB_SHIFT: u32 = 5;
/// Keys are z indices (0–2); the model holds for any key below this (hash(k) == k in CPython
/// for every int below 2**61 - 1). Bounds the table a decoded snapshot may claim, too.
pub const MAX_KEY: u32 = 1 << 20;
/// The largest table a set of our keys can need (bounds decoding).
const MAX_TABLE: usize = 1 << 24;

/// A CPython 3.11 `set` of small non-negative integers (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PySet {
    /// The hash table: a key, [`EMPTY`] or [`DUMMY`] per slot; its length is a power of two.
    table: Vec<i64>,
    /// Active plus dummy slots.
    fill: u32,
    /// Active slots (the set's length).
    used: u32,
    /// Where the next `pop` starts looking.
    finger: u32,
}

impl Default for PySet {
    fn default() -> Self {
        PySet::new()
    }
}

impl PySet {
    /// `set()`.
    pub fn new() -> PySet {
        PySet {
            table: vec![EMPTY; MIN_SIZE],
            fill: 0,
            used: 0,
            finger: 0,
        }
    }

    /// `set(iterable)`: the keys added in the iterator's order.
    pub fn from_keys(keys: impl IntoIterator<Item = u32>) -> PySet {
        let mut s = PySet::new();
        for k in keys {
            s.add(k);
        }
        s
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// `len(s)`.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used as usize
    }

    /// `not s`.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The slot holding `key`, or `None`.
    fn find(&self, key: u32) -> Option<usize> {
        let mask = self.mask();
        let mut perturb = key as usize;
        let mut i = key as usize & mask;
        loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in i..=i + probes {
                match self.table[j] {
                    EMPTY => return None,
                    k if k == key as i64 => return Some(j),
                    _ => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i * 5 + 1 + perturb) & mask;
        }
    }

    /// `key in s`.
    pub fn contains(&self, key: u32) -> bool {
        self.find(key).is_some()
    }

    /// `s.add(key)`.
    pub fn add(&mut self, key: u32) {
        assert!(key < MAX_KEY, "key {key} outside the modelled range");
        let mask = self.mask();
        let mut perturb = key as usize;
        let mut i = key as usize & mask;
        let mut freeslot = None;
        let empty = 'probe: loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in i..=i + probes {
                match self.table[j] {
                    EMPTY => break 'probe j,
                    DUMMY => freeslot = Some(j),
                    k if k == key as i64 => return,
                    _ => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i * 5 + 1 + perturb) & mask;
        };
        self.used += 1;
        if let Some(f) = freeslot {
            self.table[f] = key as i64;
            return;
        }
        self.table[empty] = key as i64;
        self.fill += 1;
        if self.fill as usize * 5 >= mask * 3 {
            self.resize(self.used as usize * 4);
        }
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
    }

    /// `s.discard(key)`; true if it was there (`s.remove(key)` without the `KeyError`).
    pub fn discard(&mut self, key: u32) -> bool {
        match self.find(key) {
            Some(j) => {
                self.table[j] = DUMMY;
                self.used -= 1;
                true
            }
            None => false,
        }
    }

    /// `s.pop()`, or `None` where CPython raises `KeyError`.
    pub fn pop(&mut self) -> Option<u32> {
        if self.used == 0 {
            return None;
        }
        let mask = self.mask();
        let mut j = self.finger as usize & mask;
        while self.table[j] < 0 {
            j += 1;
            if j > mask {
                j = 0;
            }
        }
        let key = self.table[j] as u32;
        self.table[j] = DUMMY;
        self.used -= 1;
        self.finger = (j + 1) as u32;
        Some(key)
    }

    /// Remove and return the smallest key: how this server chose before it modelled CPython
    /// (kept to replay journals written then).
    pub fn pop_min(&mut self) -> Option<u32> {
        let min = self.iter().min()?;
        self.discard(min);
        Some(min)
    }

    /// The keys in iteration order (`list(s)`: slot order).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().filter(|&&k| k >= 0).map(|&k| k as u32)
    }

    /// The keys, sorted.
    pub fn to_btree(&self) -> BTreeSet<u32> {
        self.iter().collect()
    }

    /// `set_table_resize(so, minused)`.
    fn resize(&mut self, minused: usize) {
        let mut size = MIN_SIZE;
        while size <= minused {
            size <<= 1;
        }
        if size == MIN_SIZE && self.table.len() == MIN_SIZE && self.fill == self.used {
            return; // no dummies: nothing to do
        }
        let old = std::mem::replace(&mut self.table, vec![EMPTY; size]);
        let mask = size - 1;
        for k in old.into_iter().filter(|&k| k >= 0) {
            // set_insert_clean: the first empty slot of the probe sequence.
            let mut perturb = k as usize;
            let mut i = k as usize & mask;
            let slot = 'probe: loop {
                let probes = if i + LINEAR_PROBES <= mask {
                    LINEAR_PROBES
                } else {
                    0
                };
                for j in i..=i + probes {
                    if self.table[j] == EMPTY {
                        break 'probe j;
                    }
                }
                perturb >>= PERTURB_SHIFT;
                i = (i * 5 + 1 + perturb) & mask;
            };
            self.table[slot] = k;
        }
        self.fill = self.used;
    }

    /// The table's consistency: a power-of-two size of at least 8, counts that match the
    /// slots, at least one empty slot (probing must end), no key twice.
    pub fn check(&self) -> Result<(), String> {
        let n = self.table.len();
        if n < MIN_SIZE || !n.is_power_of_two() || n > MAX_TABLE {
            return Err(format!("set table of {n} slots"));
        }
        let active = self.table.iter().filter(|&&k| k >= 0).count();
        let dummies = self.table.iter().filter(|&&k| k == DUMMY).count();
        if self.table.iter().any(|&k| k < DUMMY || k >= MAX_KEY as i64) {
            return Err("set table holds a value that is no key".into());
        }
        if active != self.used as usize || active + dummies != self.fill as usize {
            return Err(format!(
                "set counts used {} fill {} for {active} keys and {dummies} dummies",
                self.used, self.fill
            ));
        }
        if self.fill as usize >= n {
            return Err("set table has no empty slot".into());
        }
        if self.to_btree().len() != active {
            return Err("set table holds a key twice".into());
        }
        if self.iter().any(|k| self.find(k).is_none()) {
            return Err("set table holds a key where probing cannot find it".into());
        }
        Ok(())
    }
}

/// What a snapshot may hold for a set: this model's table, or (snapshots written before the
/// model existed) just the members, which become a fresh set built in ascending order.
#[derive(Deserialize)]
#[serde(untagged)]
enum PySetRepr {
    Table {
        table: Vec<i64>,
        fill: u32,
        used: u32,
        finger: u32,
    },
    /// The table written without field names (MessagePack arrays).
    TableArray(Vec<i64>, u32, u32, u32),
    Members(BTreeSet<u32>),
}

impl<'de> Deserialize<'de> for PySet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PySet, D::Error> {
        let s = match PySetRepr::deserialize(d)? {
            PySetRepr::Table {
                table,
                fill,
                used,
                finger,
            }
            | PySetRepr::TableArray(table, fill, used, finger) => PySet {
                table,
                fill,
                used,
                finger,
            },
            PySetRepr::Members(keys) => {
                if let Some(k) = keys.iter().find(|&&k| k >= MAX_KEY) {
                    return Err(serde::de::Error::custom(format!(
                        "set member {k} too large"
                    )));
                }
                PySet::from_keys(keys)
            }
        };
        s.check().map_err(serde::de::Error::custom)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the issue, and the reason this module exists.
    #[test]
    fn pop_follows_the_finger() {
        let mut s = PySet::from_keys([0, 1, 2]);
        assert_eq!(s.pop(), Some(0));
        assert_eq!(s.pop(), Some(1));
        s.add(0);
        assert_eq!(s.pop(), Some(2));
        assert_eq!(s.pop(), Some(0));
        assert_eq!(s.pop(), None);
        s.check().unwrap();
    }

    /// A step of a recorded case: the operation, its argument, what CPython returned
    /// (pop only) and `list(s)` afterwards.
    #[derive(Deserialize)]
    struct Step(String, Option<u32>, Option<u32>, Vec<u32>);

    #[derive(Deserialize)]
    struct Case {
        name: String,
        steps: Vec<Step>,
    }

    #[test]
    fn recorded_cpython_sequences() {
        let text = include_str!("../../tests/data/pyset-cases.jsonl");
        let mut cases = 0;
        let mut steps = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let case: Case = serde_json::from_str(line).expect("a recorded case");
            let mut s = PySet::new();
            for (n, Step(op, arg, returned, after)) in case.steps.iter().enumerate() {
                let got = match op.as_str() {
                    "new" => {
                        s = PySet::new();
                        None
                    }
                    "add" => {
                        s.add(arg.unwrap());
                        None
                    }
                    "discard" => {
                        s.discard(arg.unwrap());
                        None
                    }
                    "pop" => s.pop(),
                    other => panic!("unknown recorded operation {other}"),
                };
                let where_ = format!("case {} step {n} ({op} {arg:?})", case.name);
                assert_eq!(got, *returned, "{where_}: pop");
                assert_eq!(s.iter().collect::<Vec<_>>(), *after, "{where_}: list(s)");
                assert_eq!(s.len(), after.len(), "{where_}: len");
                s.check().unwrap_or_else(|e| panic!("{where_}: {e}"));
                steps += 1;
            }
            cases += 1;
        }
        assert!(
            cases >= 100 && steps >= 10_000,
            "{cases} cases, {steps} steps"
        );
    }

    #[test]
    fn snapshots_of_either_form_decode() {
        let mut s = PySet::from_keys([2, 0, 1]);
        s.pop();
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        assert_eq!(rmp_serde::from_slice::<PySet>(&bytes).unwrap(), s);
        let bytes = rmp_serde::to_vec(&s).unwrap();
        assert_eq!(rmp_serde::from_slice::<PySet>(&bytes).unwrap(), s);
        // A snapshot from before the model: the sorted members.
        for old in [BTreeSet::from([0u32, 2]), BTreeSet::new()] {
            let bytes = rmp_serde::to_vec_named(&old).unwrap();
            let got: PySet = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(got, PySet::from_keys(old.iter().copied()));
        }
        // A damaged table is refused, not trusted.
        let mut bad = PySet::from_keys([1]);
        bad.used = 2;
        let bytes = rmp_serde::to_vec_named(&bad).unwrap();
        assert!(rmp_serde::from_slice::<PySet>(&bytes).is_err());
    }

    #[test]
    fn legacy_pop_takes_the_smallest() {
        let mut s = PySet::from_keys([2, 0, 1]);
        assert_eq!(s.pop_min(), Some(0));
        s.add(0);
        assert_eq!(s.pop_min(), Some(0));
        assert_eq!(s.pop_min(), Some(1));
        assert_eq!(s.pop_min(), Some(2));
        assert_eq!(s.pop_min(), None);
    }
}
