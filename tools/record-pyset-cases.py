#!/usr/bin/env python3
"""Record how CPython's `set` of small ints behaves, for core/src/pyset.rs's unit tests.

Run once with CPython 3.11 (the version the original spalloc_server ran on in our reference):

    python3 tools/record-pyset-cases.py > tests/data/pyset-cases.jsonl

Each output line is one case: {"name": ..., "steps": [[op, arg, returned, list_after], ...]}
with op one of "new" (s = set()), "add", "discard" (s.discard / s.remove) and "pop"; returned
is what pop gave (null for the other operations, and for a pop of an empty set, which raises
KeyError), list_after is list(s) afterwards: the iteration order, i.e. the order of the
hash table's slots. The cases are seeded, so the file is reproducible.

Three families:
- "triad": what the original's allocator does to the free z indices of a single-board triad
  (set(...) of the live boards, pop, remove of a requested board, add of a released one);
- "small": keys 0..15, long histories that fill the 8-slot table with dummies and rebuild it;
- "wide": keys up to 5000 (probe perturbation, tables growing to 16, 32 and more).
"""
import json
import random
import sys

if sys.version_info[:2] != (3, 11):
    sys.exit(f"record with CPython 3.11 (this is {sys.version.split()[0]})")


def run(name, rng, keys, steps, start_keys, p_pop, p_add, allow_missing):
    s = set()
    out = [["new", None, None, []]]
    for k in start_keys:
        s.add(k)
        out.append(["add", k, None, list(s)])
    for _ in range(steps):
        r = rng.random()
        if r < p_pop:
            got = s.pop() if s else None
            out.append(["pop", None, got, list(s)])
        elif r < p_pop + p_add:
            k = rng.choice(keys)
            s.add(k)
            out.append(["add", k, None, list(s)])
        else:
            if s and (not allow_missing or rng.random() < 0.7):
                k = rng.choice(sorted(s))
            else:
                k = rng.choice(keys)
            s.discard(k)
            out.append(["discard", k, None, list(s)])
        if not s and rng.random() < 0.3:
            # The allocator drops an empty set and makes a new one later.
            s = set()
            out.append(["new", None, None, []])
            for k in sorted(rng.sample(keys[:3], rng.randint(1, 3))):
                s.add(k)
                out.append(["add", k, None, list(s)])
    return {"name": name, "steps": out}


def main():
    rng = random.Random(20261202)
    cases = []
    for n in range(400):
        live = sorted(rng.sample([0, 1, 2], rng.randint(1, 3)))
        cases.append(run(f"triad-{n}", rng, [0, 1, 2], rng.randint(5, 60), live,
                         0.45, 0.35, False))
    for n in range(200):
        keys = list(range(rng.randint(3, 16)))
        start = rng.sample(keys, rng.randint(0, len(keys)))
        cases.append(run(f"small-{n}", rng, keys, rng.randint(30, 120), start,
                         0.3, 0.45, True))
    for n in range(100):
        keys = sorted(rng.sample(range(5000), rng.randint(5, 40)))
        start = rng.sample(keys, rng.randint(0, len(keys)))
        cases.append(run(f"wide-{n}", rng, keys, rng.randint(30, 150), start,
                         0.3, 0.45, True))
    for c in cases:
        print(json.dumps(c, separators=(",", ":")))


main()
