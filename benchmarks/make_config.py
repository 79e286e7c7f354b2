#!/usr/bin/env python3
"""Write a spin1m-bench.json-like configuration for a W x H triad machine (3*W*H boards):
board n = (y*W+x)*3+z sits in cabinet n//120, frame (n%120)//24, board n%24, standard IPs
from 127.16.0.0. Usage: make_config.py W H > FILE"""
import json, sys

w, h = int(sys.argv[1]), int(sys.argv[2])
base = json.load(open("benchmarks/spin1m-bench.json"))
m = base["machines"][0]
m["name"] = f"spin{w}x{h}"
m["width"], m["height"] = w, h
boards = []
for y in range(h):
    for x in range(w):
        for z in range(3):
            n = (y * w + x) * 3 + z
            boards.append({"x": x, "y": y, "z": z, "cabinet": n // 120,
                           "frame": (n % 120) // 24, "board": n % 24})
m["boards"] = boards
base["machines"] = [m]
json.dump(base, sys.stdout, indent=1)
