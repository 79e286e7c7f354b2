#!/usr/bin/env python3
"""Differential test: the original spalloc_server 1!7.0.0 and ours, side by side.

Both servers get the same seeded random sequence of commands (create_job in every argument
form and keyword, destroy_job, power_on/off_job_boards, job_keepalive, get_job_state,
get_job_machine_info, where_is in every form, get_board_position, get_board_at_position,
list_jobs, list_machines, version) on one of several machine shapes, and every reply is
compared after normalising only what README.md lists as deliberate differences:

- times (`start_time`) and host names (`keepalivehost`), which no two runs share;
- the version string (we answer "1.0.0", the original "1!7.0.0");
- "sets come out sorted": the order of job boards, connections, tags, dead boards and dead
  links, and of the names in where_is's "Invalid arguments" message;
- "correct width/height": where the two differ, each must be what its own rule gives for
  the (identical) boards: the original's lexicographic-maximum board, our per-axis maximum.

The generator never sends what README.md says we refuse on purpose and the original turns
into a zombie job (machine together with tags, an unknown keyword, a require_torus other
than false with a board request, a non-list tags, a bad keepalive, a negative min_ratio
with n boards, a keyword also given by position): those consume a job id in the original
only, and every later id would differ. Nor does it send what README.md says we refuse as bad
input (a null or non-integer x, y, z, n, w or h). Keepalives are long (or None), so no job expires
during a run: expiry times are a deliberate difference too ("exact timers").

Timing. The original runs with its fake BMPs (../shared/oracle/run_original.py, every request
done FAKE_BMP_DELAY seconds later, in a timer thread); ours with --simulate-bmps. A command can
start hardware work that ends later (a power-on, or the power-off of a destroyed job, after
which its boards are freed and queued jobs are allocated). Before each next command the
harness waits, bounded, until both servers have settled:
- the original: no fake BMP request outstanding. The launcher below runs run_original.py
  unchanged but counts its timer threads and adds one read-only command,
  `_differential_pending_bmp`, that returns the count;
- ours: no job in state 2 (power) and, for every job destroyed while it held boards, the log
  line "job N: powered down; boards handed back".
Both servers release freed boards at once (seconds_before_free = 0), so the state after
settling does not depend on how long anything took.

Usage (from the repository root, after `cargo build`):
    python3 -m venv ../orig-venv && ../orig-venv/bin/pip install 'spalloc_server==1!7.0.0'
    python3 e2e/differential.py --server target/debug/spalloc-server \\
        --original-python ../orig-venv/bin/python --seeds 1-200 --steps 300
Exit status 0 if every reply agreed, 1 if any differed (the first difference of each failing
run is printed with the commands that led to it), 2 on a usage or start-up error.
"""

import argparse
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ORACLE = REPO.parent / "shared" / "oracle" / "run_original.py"

START_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 20.0
REPLY_TIMEOUT_S = 20.0
POLL_S = 0.002
FAKE_BMP_DELAY_S = "0.002"

LINKS = ["east", "north_east", "north", "west", "south_west", "south"]

# ---- machine shapes ----------------------------------------------------------------------
# A machine: name, tags, width, height (triads), dead boards, dead links (x, y, z, link int);
# or a single board (the original's Machine.single_board).


def machine(name, tags, w, h, dead=(), dead_links=()):
    return {"name": name, "tags": list(tags), "width": w, "height": h,
            "dead_boards": [list(b) for b in dead], "dead_links": [list(l) for l in dead_links]}


def single(name, tags):
    return {"name": name, "tags": list(tags), "single": True, "width": 1, "height": 1,
            "dead_boards": [[0, 0, 1], [0, 0, 2]], "dead_links": []}


SHAPES = {
    # One 4x2 machine with dead boards (one in a corner triad) and dead links.
    "dead": [machine("spin", ["default"], 4, 2, dead=[(0, 0, 1), (2, 1, 0), (3, 1, 2)],
                     dead_links=[(0, 0, 0, 2), (1, 0, 2, 0), (2, 0, 0, 4), (3, 0, 1, 1)])],
    # Several machines and tags, in priority order.
    "tagged": [machine("m0", ["default"], 1, 2),
               machine("m1", ["default", "extra"], 3, 2, dead=[(1, 1, 1)],
                       dead_links=[(0, 0, 2, 3)]),
               machine("pie", ["pie", "chips"], 1, 1),
               machine("curry", ["curry", "chips"], 2, 1, dead=[(1, 0, 0)]),
               single("b1", ["single"]),
               single("b2", ["single", "chips"])],
    # Single-board machines and one small triad machine with a dead board.
    "singles": [single("s1", ["default"]), single("s2", ["default", "x"]),
                machine("t", ["default"], 1, 1, dead=[(0, 0, 2)]),
                single("s3", ["x"])],
    # A larger machine (wrap-around in both directions, torus requests) and a spare.
    "wide": [machine("big", ["default"], 6, 4, dead=[(5, 3, 1)], dead_links=[(2, 2, 0, 5)]),
             machine("spare", ["spare"], 2, 2)],
    # Holes: a dead bottom-left board, a whole dead triad, dead links around them.
    "holes": [machine("holey", ["default"], 3, 3,
                      dead=[(0, 0, 0), (1, 1, 0), (1, 1, 1), (1, 1, 2), (2, 0, 2)],
                      dead_links=[(0, 1, 0, 5), (2, 2, 1, 2), (1, 0, 2, 1)]),
              single("solo", ["default"])],
    # Tiny machines: everything fights over a few triads.
    "tiny": [machine("one", ["default"], 1, 1), machine("two", ["default"], 1, 2,
                                                        dead=[(0, 1, 1)])],
}


# A short retired-job history on some shapes: old destroyed jobs become unknown (state 0).
MAX_RETIRED_JOBS = {"tiny": 4, "singles": 7}


def live_boards(m):
    dead = {tuple(b) for b in m["dead_boards"]}
    return [(x, y, z) for x in range(m["width"]) for y in range(m["height"]) for z in range(3)
            if (x, y, z) not in dead]


def physical(mi, m, b):
    x, y, z = b
    return (mi, y, x * 3 + z)  # cabinet = machine index, frame = row, board = 3x + z


def spinnaker_ip(mi, b):
    x, y, z = b
    return f"10.{mi}.{y}.{x * 3 + z}"


def bmp_address(prefix, mi, frame):
    return f"{prefix}{mi * 16 + frame + 1}"


def our_config(shape, prefix, max_retired):
    machines = []
    for mi, m in enumerate(shape):
        if m.get("single"):
            machines.append({"name": m["name"], "tags": m["tags"], "single_board": {
                "bmp": bmp_address(prefix, mi, 0), "ip": spinnaker_ip(mi, (0, 0, 0))}})
            continue
        boards = live_boards(m)
        frames = sorted({physical(mi, m, b)[1] for b in boards})
        machines.append({
            "name": m["name"], "tags": m["tags"], "width": m["width"], "height": m["height"],
            "dead_boards": m["dead_boards"], "dead_links": m["dead_links"],
            "bmps": [{"cabinet": mi, "frame": f, "address": bmp_address(prefix, mi, f)}
                     for f in frames],
            "boards": [dict(zip(("x", "y", "z"), b),
                            **dict(zip(("cabinet", "frame", "board"), physical(mi, m, b))),
                            ip=spinnaker_ip(mi, b)) for b in boards]})
    return {"ip": "127.0.0.1", "port": 0, "timeout_check_interval": 0.5,
            "max_retired_jobs": max_retired, "seconds_before_free": 0.0,
            "bmp": {"post_power_on_delay": 0.0, "power_on_timeout": 2.0, "command_timeout": 0.5,
                    "command_retries": 3, "request_attempts": 2, "retry_delay": 0.1,
                    "fpga_attempts": 3},
            "machines": machines}


def original_config(shape, prefix, max_retired):
    lines = ["# spalloc_server configuration written by e2e/differential.py (loopback only)",
             "machines = []"]
    for mi, m in enumerate(shape):
        tags = "set(%r)" % (m["tags"],)
        if m.get("single"):
            lines.append("machines.append(Machine.single_board(%r, tags=%s, bmp_ip=%r, "
                         "spinnaker_ip=%r))" % (m["name"], tags, bmp_address(prefix, mi, 0),
                                                spinnaker_ip(mi, (0, 0, 0))))
            continue
        boards = live_boards(m)
        frames = sorted({physical(mi, m, b)[1] for b in boards})
        lines.append(
            "machines.append(Machine(name=%r, tags=%s, width=%d, height=%d, "
            "dead_boards=set(%r), dead_links=set((x, y, z, Links(l)) for x, y, z, l in %r), "
            "board_locations=%r, bmp_ips=%r, spinnaker_ips=%r))" % (
                m["name"], tags, m["width"], m["height"],
                [tuple(b) for b in m["dead_boards"]], [tuple(l) for l in m["dead_links"]],
                {b: physical(mi, m, b) for b in boards},
                {(mi, f): bmp_address(prefix, mi, f) for f in frames},
                {b: spinnaker_ip(mi, b) for b in boards}))
    lines.append('configuration = Configuration(machines=machines, ip="127.0.0.1", '
                 'timeout_check_interval=0.5, max_retired_jobs=%d, seconds_before_free=0)'
                 % max_retired)
    return "\n".join(lines) + "\n"


# The original, launched through run_original.py unchanged, plus a count of the fake BMP
# requests still outstanding (its fake completes each in a threading.Timer).
LAUNCHER = r'''
import runpy, sys, threading
import spalloc_server.server as server

_lock = threading.Lock()
_pending = [0]

class _CountingTimer(threading.Timer):
    def start(self):
        with _lock:
            _pending[0] += 1
        super().start()
    def run(self):
        try:
            super().run()
        finally:
            with _lock:
                _pending[0] -= 1

threading.Timer = _CountingTimer

def _differential_pending_bmp(self, client):
    with _lock:
        return _pending[0]

server._COMMANDS["_differential_pending_bmp"] = _differential_pending_bmp
oracle = sys.argv[1]
sys.argv = [oracle] + sys.argv[2:]
runpy.run_path(oracle, run_name="__main__")
'''


class Connection:
    """One raw protocol connection: a JSON object per line; notifications are skipped."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT_S)
        self.buf = b""

    def call(self, command, *args, **kwargs):
        msg = {"command": command, "args": list(args), "kwargs": kwargs}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError(f"connection closed after {msg}")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            reply = json.loads(line)
            if "return" in reply or "exception" in reply:
                return reply

    def close(self):
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, args, cwd, env=None):
        self.log_path = cwd / "server.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def connect_when_up(proc, port, what):
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return Connection(port)
        except OSError:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{what} exited during start-up:\n{proc.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept connections in time:\n{proc.log()}")
            time.sleep(0.02)


class Original:
    def __init__(self, workdir, shape, prefix, python, oracle, max_retired=1200):
        workdir.mkdir()
        (workdir / "test.cfg").write_text(original_config(shape, prefix, max_retired))
        (workdir / "launch.py").write_text(LAUNCHER)
        env = dict(os.environ, FAKE_BMP_DELAY=FAKE_BMP_DELAY_S)
        env.pop("FAKE_BMP_FAIL", None)
        for attempt in range(5):
            self.port = free_port()
            self.proc = Process([python, "launch.py", str(oracle), "test.cfg", "--port",
                                 str(self.port), "--cold-start"], workdir, env)
            try:
                self.conn = connect_when_up(self.proc, self.port, "the original server")
                self.probe = Connection(self.port)
                return
            except RuntimeError:
                self.proc.stop()
                if attempt == 4:
                    raise

    def settled(self):
        return self.probe.call("_differential_pending_bmp")["return"] == 0

    def pending(self):
        return "the original has %s fake BMP requests outstanding" % (
            self.probe.call("_differential_pending_bmp")["return"])

    def stop(self):
        self.proc.stop()


class Ours:
    def __init__(self, workdir, shape, prefix, binary, max_retired=1200):
        workdir.mkdir()
        config = workdir / "machines.json"
        config.write_text(json.dumps(our_config(shape, prefix, max_retired), indent=1))
        self.proc = Process([binary, "--journal", str(workdir / "journal"), "--config",
                             str(config), "--simulate-bmps"], workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.proc.log())
            if m:
                break
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"spalloc-server did not start:\n{self.proc.log()}")
            time.sleep(0.01)
        self.port = int(m.group(1))
        self.conn = connect_when_up(self.proc, self.port, "spalloc-server")
        self.probe = Connection(self.port)
        self.expect_power_down = set()

    def settled(self):
        if any(j["state"] == 2 for j in self.probe.call("list_jobs")["return"]):
            return False
        if self.expect_power_down:
            log = self.proc.log()
            self.expect_power_down = {j for j in self.expect_power_down
                                      if f"Z job {j}: powered down; boards handed back"
                                      not in log}
        return not self.expect_power_down

    def pending(self):
        powering = [j["job_id"] for j in self.probe.call("list_jobs")["return"]
                    if j["state"] == 2]
        return (f"ours has jobs {powering} in state 2 and waits for the power-down of jobs "
                f"{sorted(self.expect_power_down)}")

    def stop(self):
        self.proc.stop()


def wait_settled(servers):
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not all(s.settled() for s in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the servers did not settle within %.0f s: %s" % (
                SETTLE_TIMEOUT_S, "; ".join(s.pending() for s in servers if not s.settled())))
        time.sleep(POLL_S)


# ---- commands ----------------------------------------------------------------------------

class Generator:
    """Seeded random commands for one shape. Job ids come back identical from both servers
    (else the run has already failed), so the generator learns them from the replies."""

    def __init__(self, shape, seed):
        self.rng = random.Random(seed)
        self.shape = shape
        self.jobs = []  # every id returned by create_job
        self.names = [m["name"] for m in shape]
        self.tags = sorted({t for m in shape for t in m["tags"]})
        self.max_w = max(m["width"] for m in shape)
        self.max_h = max(m["height"] for m in shape)
        self.boards = sum(len(live_boards(m)) for m in shape)

    def job_id(self):
        r = self.rng.random()
        if self.jobs and r < 0.9:
            # Mostly recent jobs, sometimes any (and now and then as a float: 5.0 is job 5).
            j = self.rng.choice(self.jobs[-6:] if r < 0.6 else self.jobs)
            return float(j) if self.rng.random() < 0.03 else j
        return self.rng.choice([0, 1, 999, len(self.jobs) + 1, "1"])

    def machine_name(self):
        return self.rng.choice(self.names + ["nosuch"]) if self.rng.random() < 0.95 \
            else self.rng.choice(self.names)

    def create_job(self):
        rng = self.rng
        form = rng.choices(["none", "one", "n", "wh", "xyz", "xyz4", "xyz5", "xyz6", "xyz7"],
                           [30, 20, 40, 40, 20, 5, 3, 2, 2])[0]
        mw, mh = self.max_w, self.max_h
        if form == "none":
            args = []
        elif form == "one":
            args = [1]
        elif form == "n":
            args = [rng.choice([2, 3, 4, 5, 6, 7, 9, 12, rng.randint(2, self.boards + 3),
                                rng.randint(-1, 0)])]
        elif form == "wh":
            args = [rng.randint(0 if rng.random() < 0.05 else 1, mw + (rng.random() < 0.1)),
                    rng.randint(1, mh + (rng.random() < 0.1))]
        else:
            args = [rng.randint(0, mw - 1 + (rng.random() < 0.1)),
                    rng.randint(0, mh - 1 + (rng.random() < 0.1)),
                    rng.randint(0, 2 + (rng.random() < 0.05))]
            if form != "xyz":
                # Allocator.alloc(x, y, z, max_dead_boards, max_dead_links, require_torus,
                # min_ratio): the extra positional arguments stand for these keywords.
                extra = [rng.choice([0, 1, 3, None]), rng.choice([0, 2, None]),
                         False, rng.choice([0.0, 0.5, 1])]
                args += extra[:int(form[3]) - 3]
        kwargs = {"owner": rng.choice(["me", "you", "lab-x"])}
        if rng.random() < 0.02:
            del kwargs["owner"]  # an exception, no job
        r = rng.random()
        if r < 0.5:
            pass
        elif r < 0.7:
            kwargs["keepalive"] = None
        else:
            kwargs["keepalive"] = rng.choice([3600, 3600.5, 86400.0])
        board_type = form not in ("n", "wh")
        r = rng.random()
        if r < 0.2:
            kwargs["machine"] = self.machine_name()
        elif r < 0.5:
            kwargs["tags"] = rng.sample(self.tags, rng.randint(0, min(2, len(self.tags))))
            if rng.random() < 0.05:
                kwargs["tags"].append("nosuchtag")
        if rng.random() < 0.3:
            kwargs["min_ratio"] = rng.choice([0.0, 0.25, 1 / 3, 0.5, 0.75, 1.0, 2.0, 4])
        if rng.random() < 0.3 and len(args) < 4:
            kwargs["max_dead_boards"] = rng.choice([None, 0, 1, 2, 5])
        if rng.random() < 0.25 and len(args) < 5:
            kwargs["max_dead_links"] = rng.choice([None, 0, 1, 3])
        if len(args) < 6:
            if not board_type and rng.random() < 0.15:
                kwargs["require_torus"] = rng.choice([True, False, 1, 0])
            elif rng.random() < 0.05:
                kwargs["require_torus"] = False
        if len(args) >= 7:
            kwargs.pop("min_ratio", None)
        return "create_job", args, kwargs

    def where_is(self):
        rng = self.rng
        form = rng.randrange(4)
        chip = lambda: rng.randint(-13, 12 * max(self.max_w, self.max_h) + 13)
        if form == 0:
            kw = {"machine": self.machine_name(), "x": rng.randint(0, self.max_w),
                  "y": rng.randint(0, self.max_h), "z": rng.randint(0, 3)}
        elif form == 1:
            mi = rng.randrange(len(self.shape))
            kw = {"machine": self.machine_name(), "cabinet": mi,
                  "frame": rng.randint(0, self.max_h), "board": rng.randint(0, 3 * self.max_w)}
        elif form == 2:
            kw = {"machine": self.machine_name(), "chip_x": chip(), "chip_y": chip()}
        else:
            kw = {"job_id": self.job_id(), "chip_x": chip(), "chip_y": chip()}
        if rng.random() < 0.03:
            kw.pop(rng.choice(sorted(kw)))  # an invalid combination: an exception
        return "where_is", [], kw

    def malformed(self):
        """A call of the wrong arity: the same TypeError text from both."""
        rng = self.rng
        name = rng.choice(["get_job_state", "job_keepalive", "get_job_machine_info",
                           "destroy_job", "power_on_job_boards", "list_jobs",
                           "get_board_position", "where_is"])
        if rng.random() < 0.5 and name not in ("list_jobs",):
            return name, [], {}
        return name, [1, 2, 3, 4, 5], {}

    def next(self):
        rng = self.rng
        if rng.random() < 0.01:
            return self.malformed()
        kind = rng.choices(
            ["create", "destroy", "on", "off", "keepalive", "state", "info", "where",
             "position", "at_position", "list_jobs", "list_machines", "version"],
            [22, 10, 4, 4, 3, 8, 8, 10, 4, 4, 6, 2, 1])[0]
        if kind == "create":
            return self.create_job()
        if kind == "destroy":
            args = [self.job_id()]
            if rng.random() < 0.5:
                args.append(rng.choice(["done", "Because.", None]))
            return "destroy_job", args, {}
        if kind in ("on", "off", "keepalive", "state", "info"):
            name = {"on": "power_on_job_boards", "off": "power_off_job_boards",
                    "keepalive": "job_keepalive", "state": "get_job_state",
                    "info": "get_job_machine_info"}[kind]
            return name, [self.job_id()], {}
        if kind == "where":
            return self.where_is()
        if kind == "position":
            return "get_board_position", [self.machine_name(), rng.randint(0, self.max_w),
                                          rng.randint(0, self.max_h), rng.randint(0, 3)], {}
        if kind == "at_position":
            return "get_board_at_position", [self.machine_name(),
                                             rng.randrange(len(self.shape) + 1),
                                             rng.randint(0, self.max_h),
                                             rng.randint(0, 3 * self.max_w)], {}
        return {"list_jobs": "list_jobs", "list_machines": "list_machines",
                "version": "version"}[kind], [], {}

    def learn(self, command, reply):
        if command == "create_job" and isinstance(reply.get("return"), int):
            self.jobs.append(reply["return"])


# ---- normalisation (the deliberate differences of README.md, and nothing else) ------------

def _sorted(v):
    return sorted(v, key=json.dumps) if isinstance(v, list) else v


def normalise(command, reply, ours):
    reply = json.loads(json.dumps(reply))
    if "exception" in reply:
        m = re.match(r"(Invalid arguments: )(.*)$", reply["exception"])
        if m:
            reply["exception"] = m.group(1) + ", ".join(sorted(m.group(2).split(", ")))
        return reply
    value = reply.get("return")
    if command == "version":
        reply["return"] = "VERSION"
    elif command == "get_job_state" and isinstance(value, dict):
        if value.get("start_time") is not None:
            value["start_time"] = "TIME"
        if value.get("keepalivehost") is not None:
            value["keepalivehost"] = "HOST"
    elif command == "list_jobs" and isinstance(value, list):
        for job in value:
            job["start_time"] = "TIME" if job.get("start_time") is not None else None
            if job.get("keepalivehost"):
                job["keepalivehost"] = "HOST"
            job["boards"] = _sorted(job.get("boards"))
            if isinstance(job.get("kwargs"), dict) and isinstance(job["kwargs"].get("tags"), list):
                job["kwargs"]["tags"] = sorted(job["kwargs"]["tags"])
    elif command == "list_machines" and isinstance(value, list):
        for m in value:
            for k in ("tags", "dead_boards", "dead_links"):
                m[k] = _sorted(m.get(k))
    elif command == "get_job_machine_info" and isinstance(value, dict):
        value["boards"] = _sorted(value.get("boards"))
        value["connections"] = _sorted(value.get("connections"))
    return reply


def dimensions_explained(o, u):
    """Where get_job_machine_info's width/height differ, true if each is its own server's
    documented rule for the same boards (README: "Correct width/height")."""
    ov, uv = o.get("return"), u.get("return")
    if not (isinstance(ov, dict) and isinstance(uv, dict)):
        return False
    boards = [tuple(b) for b in ov.get("boards") or []]
    if len(boards) <= 1 or sorted(boards) != sorted(tuple(b) for b in uv.get("boards") or []):
        return False
    # Both use triad_dimensions_to_chips(w, h, torus) = 12w (+4 without x-wrap), 12h (+4).
    ox, oy, _ = min(boards)
    lx, ly, _ = max(boards)  # the original: lexicographic maximum
    ax = max(b[0] for b in boards)
    ay = max(b[1] for b in boards)
    ext = lambda v, n: v - 12 * n  # 0 or 4: the wrap part, the same rule on both sides
    ow, oh, uw, uh = ov["width"], ov["height"], uv["width"], uv["height"]
    return (ext(ow, lx - ox + 1) in (0, 4) and ext(oh, ly - oy + 1) in (0, 4)
            and ext(uw, ax - ox + 1) == ext(ow, lx - ox + 1)
            and ext(uh, ay - oy + 1) == ext(oh, ly - oy + 1)
            and (lx, ly) != (ax, ay))


# ---- a run -------------------------------------------------------------------------------

class Difference(Exception):
    pass


def short(reply, limit=400):
    text = json.dumps(reply)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def run_one(shape_name, seed, steps, binary, python, oracle, scratch):
    """Run `steps` commands of `seed` on `shape_name`; return the number of replies compared.
    Raises Difference with a readable account on the first disagreement."""
    shape = SHAPES[shape_name]
    max_retired = MAX_RETIRED_JOBS.get(shape_name, 1200)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"diff-{shape_name}-{seed}-", dir=scratch))
    orig = ours = None
    history = []
    try:
        for attempt in range(8):
            # A private loopback /24 for our simulated BMPs (the original's are fakes that
            # bind nothing); another run on this machine may hold one: then try another.
            r = random.Random(f"{os.getpid()} {seed} {attempt} {time.monotonic_ns()}")
            prefix = f"127.{r.randrange(60, 250)}.{r.randrange(256)}."
            try:
                ours = Ours(work / f"ours-{attempt}", shape, prefix, binary, max_retired)
                break
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 7:
                    raise
        orig = Original(work / "original", shape, prefix, python, oracle, max_retired)
        servers = [orig, ours]
        gen = Generator(shape, seed)
        ours_state = {}
        for step in range(steps):
            command, args, kwargs = gen.next()
            if (command == "destroy_job" and len(args) in (1, 2) and not kwargs
                    and ours_state.get(args[0]) in (2, 3)):
                ours.expect_power_down.add(int(args[0]))
            o = orig.conn.call(command, *args, **kwargs)
            u = ours.conn.call(command, *args, **kwargs)
            history.append((command, args, kwargs, o, u))
            no, nu = normalise(command, o, False), normalise(command, u, True)
            if command == "get_job_machine_info" and no != nu:
                # The documented width/height fix, and nothing else.
                if dimensions_explained(o, u):
                    for n in (no, nu):
                        n["return"]["width"] = n["return"]["height"] = "DIMENSION"
            if no != nu:
                lines = [f"shape {shape_name}, seed {seed}: step {step} differs",
                         f"  {command}(*{args!r}, **{kwargs!r})"]
                ov, uv = no.get("return"), nu.get("return")
                if isinstance(ov, list) and isinstance(uv, list):
                    # Only the entries that differ (a list_jobs can be long).
                    for i in range(max(len(ov), len(uv))):
                        a = ov[i] if i < len(ov) else "(none)"
                        b = uv[i] if i < len(uv) else "(none)"
                        if a != b:
                            lines += [f"  original [{i}]: {json.dumps(a)}",
                                      f"  ours     [{i}]: {json.dumps(b)}"]
                            break
                else:
                    lines += [f"  original: {short(o)}", f"  ours:     {short(u)}"]
                lines.append("  the commands before it (most recent last):")
                for c, a, k, ro, ru in history[-12:-1]:
                    lines.append(f"    {c}(*{a!r}, **{k!r}) -> {short(ro)}")
                raise Difference("\n".join(lines))
            gen.learn(command, o)
            wait_settled(servers)
            ours_state = {j["job_id"]: j["state"]
                          for j in ours.probe.call("list_jobs")["return"]}
        return steps
    except Difference:
        raise
    except Exception as e:
        logs = ""
        for name, s in (("original", orig), ("ours", ours)):
            if s is not None:
                logs += f"\n--- {name} log (tail)\n" + "\n".join(s.proc.log().splitlines()[-30:])
        raise RuntimeError(f"shape {shape_name}, seed {seed}, after {len(history)} steps: "
                           f"{type(e).__name__}: {e}{logs}") from e
    finally:
        for s in (orig, ours):
            if s is not None:
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds.extend(range(int(a), int(b or a) + 1))
    return seeds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("SPALLOC_SERVER",
                                                      str(REPO / "target/debug/spalloc-server")))
    p.add_argument("--original-python", default=os.environ.get("SPALLOC_ORIGINAL_PYTHON"),
                   help="python of a virtualenv with spalloc_server==1!7.0.0")
    p.add_argument("--oracle", default=str(DEFAULT_ORACLE), help="run_original.py")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: "
                   + ", ".join(SHAPES))
    p.add_argument("--seeds", default="1-3", help="e.g. 1-200 or 1,5,9")
    p.add_argument("--steps", type=int, default=300, help="commands per seed and shape")
    args = p.parse_args(argv)
    if not args.original_python:
        p.error("--original-python (or SPALLOC_ORIGINAL_PYTHON) is required")
    scratch = tempfile.mkdtemp(prefix="spalloc-differential-")
    total = runs = failed = 0
    started = time.monotonic()
    try:
        for shape in args.shapes.split(","):
            if shape not in SHAPES:
                p.error(f"unknown shape {shape}")
            for seed in parse_seeds(args.seeds):
                runs += 1
                try:
                    total += run_one(shape, seed, args.steps, args.server,
                                     args.original_python, args.oracle, scratch)
                    result = "ok"
                except Difference as d:
                    failed += 1
                    result = "DIFFERENT"
                    print(d, flush=True)
                except RuntimeError as e:
                    failed += 1
                    result = "COULD NOT RUN"
                    print(e, flush=True)
                print(f"{shape} seed {seed}: {result} ({total} replies agreed so far, "
                      f"{failed} runs differed, {time.monotonic() - started:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{runs} runs, {total} replies compared, {failed} runs with a difference")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
