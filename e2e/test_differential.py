"""The original server and ours answer the same seeded command sequences identically
(differential.py explains how, and what is normalised). CI runs a few seeds of every shape;
`python3 e2e/differential.py --seeds 1-1000` runs thousands of steps (README.md)."""

import os
import pathlib

import pytest

import differential

SEEDS = differential.parse_seeds(os.environ.get("SPALLOC_DIFF_SEEDS", "1-3"))
STEPS = int(os.environ.get("SPALLOC_DIFF_STEPS", "250"))


def _needed(path, what):
    """The path, if it is there; else a failure under CI=true and a skip elsewhere."""
    if path and os.access(path, os.R_OK):
        return os.path.abspath(path)
    why = f"{what} is not available ({path or 'not set'})"
    if os.environ.get("CI") == "true":
        pytest.fail(why + ": CI must install it (see .ci/run)")
    pytest.skip(why)


@pytest.mark.parametrize("shape", sorted(differential.SHAPES))
def test_every_reply_matches_the_original(shape, tmp_path):
    server = _needed(os.environ.get("SPALLOC_SERVER"), "our server (SPALLOC_SERVER)")
    python = _needed(os.environ.get("SPALLOC_ORIGINAL_PYTHON"),
                     "a python with spalloc_server==1!7.0.0 (SPALLOC_ORIGINAL_PYTHON)")
    oracle = _needed(str(differential.DEFAULT_ORACLE), "the oracle's run_original.py")
    compared = 0
    for seed in SEEDS:
        try:
            compared += differential.run_one(shape, seed, STEPS, server, python, oracle,
                                             tmp_path)
        except differential.Difference as d:
            pytest.fail(str(d), pytrace=False)
    assert compared == STEPS * len(SEEDS)
