#!/usr/bin/env python3
"""Regenerates the example configurations `machines.json` and `spin1m.json`.

Both are committed; run this (from anywhere) only after changing the layouts below.
Every BMP address lies on loopback so that `--simulate-bmps` can serve them all, and the
board IPs are mere labels (the server never contacts the boards themselves).
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# Small hardware timings so that a demo powers boards up in well under a second.
DEMO_BMP = {
    "post_power_on_delay": 0.1,
    "power_on_timeout": 2.0,
    "command_timeout": 0.2,
    "command_retries": 3,
    "request_attempts": 2,
    "retry_delay": 1.0,
    "fpga_attempts": 3,
}


def dump(path, config):
    """Writes `config` with one board per line: readable and diff-friendly."""
    def encode(value, indent):
        pad = "  " * indent
        if isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            items = [f'{pad}  {json.dumps(k)}: {encode(v, indent + 1)}' for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            items = [pad + "  " + encode(v, indent + 1) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(value)

    with open(os.path.join(HERE, path), "w", encoding="utf-8") as f:
        f.write(encode(config, 0) + "\n")


def spin4x2():
    """A 4x2-triad machine (24 boards) in cabinet 0: triad row y sits in frame y, and the
    boards of a row are numbered x*3+z within the frame."""
    boards = []
    for y in range(2):
        for x in range(4):
            for z in range(3):
                b = x * 3 + z
                boards.append({"x": x, "y": y, "z": z, "cabinet": 0, "frame": y,
                               "board": b, "ip": f"127.0.{10 + y}.{8 * b + 1}"})
    return {
        "name": "spin4x2",
        "tags": ["default"],
        "width": 4,
        "height": 2,
        "bmps": [
            {"cabinet": 0, "frame": 0, "address": "127.0.0.1:17893"},
            {"cabinet": 0, "frame": 1, "address": "127.0.0.1:17894"},
        ],
        "boards": boards,
    }


def machines():
    return {
        "ip": "127.0.0.1",
        "port": 22244,
        "timeout_check_interval": 1.0,
        "max_retired_jobs": 1200,
        "seconds_before_free": 5.0,
        "bmp": DEMO_BMP,
        "machines": [
            spin4x2(),
            {"name": "board", "tags": ["single"],
             "single_board": {"bmp": "127.0.0.1:17895", "ip": "127.0.20.1"}},
        ],
    }


def spin1m():
    """A 20x20-triad machine (1,200 boards) over 10 cabinets of 5 frames of 24 boards.
    Boards are numbered in (y, x, z) order and fill frames in turn: board number i
    sits in frame i // 24 (cabinet = frame // 5, frame % 5), position i % 24."""
    boards = []
    for y in range(20):
        for x in range(20):
            for z in range(3):
                i = (y * 20 + x) * 3 + z
                frame = i // 24
                boards.append({"x": x, "y": y, "z": z, "cabinet": frame // 5,
                               "frame": frame % 5, "board": i % 24})
    return {
        "ip": "127.0.0.1",
        "timeout_check_interval": 1.0,
        "seconds_before_free": 5.0,
        "bmp": DEMO_BMP,
        "machines": [{
            "name": "spin1m",
            "tags": ["default"],
            "width": 20,
            "height": 20,
            # The standard scheme (frame = 0.0.1.0, cabinet = 0.0.5.0, board = 0.0.0.8) from
            # a loopback base: BMPs are 127.16.<5c+f>.0, boards 127.16.<5c+f>.<8b+1>.
            "standard_ips": {
                "base_ip": "127.16.0.0",
                "cabinet_stride": "0.0.5.0",
                "frame_stride": "0.0.1.0",
                "board_stride": "0.0.0.8",
                "bmp_offset": "0.0.0.0",
                "spinnaker_offset": "0.0.0.1",
            },
            "boards": boards,
        }],
    }


if __name__ == "__main__":
    dump("machines.json", machines())
    dump("spin1m.json", spin1m())
