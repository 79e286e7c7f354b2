"""End-to-end harness: the real `spalloc-server` binary against the real PyPI client.

Every test gets a fresh server (its own journal, an ephemeral TCP port and a private
loopback range for its simulated BMPs), so no test sees another's jobs. The client's
command-line tools run as subprocesses with HOME and the working directory set to a scratch
directory holding a `.spalloc` file that names this server, exactly as a user would set
them up.

Environment (set by `.ci/run`):
  SPALLOC_SERVER     path of the `spalloc-server` binary (required)
  SPALLOC_WHERE_IS   path of `spalloc-where-is` from spalloc 1!7.3.0 (required: the 1!7.4.x
                     release crashes on --board/--physical/--chip)
  SPALLOC_ORIGINAL_PYTHON
                     python of a virtualenv with the original spalloc_server 1!7.0.0, for
                     test_differential.py (which fails without it under CI=true, and is
                     skipped elsewhere)

Every wait is bounded, and a failing test shows the server's log.

To run it by hand (from the repository root, after `cargo build`):
  python3 -m venv ../e2e-venv && ../e2e-venv/bin/pip install -r e2e/requirements.txt
  python3 -m venv ../e2e-venv73 && ../e2e-venv73/bin/pip install -r e2e/requirements-where-is.txt
  cd e2e && PATH="$PWD/../../e2e-venv/bin:$PATH" SPALLOC_SERVER=../target/debug/spalloc-server \
      SPALLOC_WHERE_IS=../../e2e-venv73/bin/spalloc-where-is \
      SPALLOC_ORIGINAL_PYTHON=../../orig-venv/bin/python python -m pytest
  (with python3 -m venv ../orig-venv && ../orig-venv/bin/pip install -r e2e/requirements-original.txt)
"""

import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from spalloc_client import Job, ProtocolClient

HERE = pathlib.Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "machines.json"
OWNER = "ci"

# Bounds on every wait, in seconds. Generous: the CI machine has two shared cores.
SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 20.0
TOOL_TIMEOUT_S = 30.0
WAIT_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05

_counter = itertools.count()


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"environment variable {name} is not set (run the suite through .ci/run)",
                    returncode=3)
    if not os.access(value, os.X_OK):
        pytest.exit(f"{name}={value} is not an executable file", returncode=3)
    return os.path.abspath(value)  # the server and the tools run in scratch directories


def _bmp_prefix():
    """A loopback /24 for this server's simulated BMPs: 127.55.N (the Rust tests use
    127.100-249.x), different for each server of this run and, very likely, from a
    concurrent run's."""
    n = (os.getpid() * 7 + next(_counter)) % 250
    return f"127.55.{n}."


def wait_until(predicate, what, timeout_s=WAIT_TIMEOUT_S):
    """Poll `predicate` until it returns a true value (which is returned); fail after
    `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


class Server:
    """A running `spalloc-server` on a scratch directory."""

    def __init__(self, workdir):
        self.binary = _required_env("SPALLOC_SERVER")
        self.workdir = workdir
        self.journal = workdir / "journal"
        self.log_path = workdir / "server.log"
        self.home = workdir / "home"
        self.home.mkdir()

        template = CONFIG_TEMPLATE.read_text()
        config = json.loads(template.replace("127.0.55.", _bmp_prefix()))
        config["ip"] = "127.0.0.1"
        config["port"] = 0  # the server then prints "listening on ADDR" on stderr
        self.config_path = workdir / "machines.json"
        self.config_path.write_text(json.dumps(config, indent=1))

        self._log = open(self.log_path, "ab")
        self.process = None
        self.port = None
        self.http_port = None  # the status page's, when started with http=True
        self._clients = []
        self._jobs = []

    def start(self, http=False):
        """Start the server; with `http`, its status page too (on an ephemeral port,
        `http_port`)."""
        log_start = self.log_path.stat().st_size
        self.port = self._launch(["--http", "127.0.0.1:0"] if http else [])
        if http:
            self.http_port = self._await_http_port(log_start)
        (self.home / ".spalloc").write_text(
            f"[spalloc]\nhostname = 127.0.0.1\nport = {self.port}\nowner = {OWNER}\n")

    def _launch(self, extra_args):
        """Start the server process; return the port it listens on."""
        log_start = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [self.binary, "--journal", str(self.journal), "--config", str(self.config_path),
             "--simulate-bmps", *extra_args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.workdir)
        return self._await_port(log_start)

    def _await_port(self, log_start):
        # Printed because the configuration asks for port 0; on a restart with --port the
        # general start-up line names the port instead.
        pattern = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = pattern.search(self.log_path.read_bytes()[log_start:])
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                pytest.fail(f"spalloc-server exited with status {self.process.returncode} "
                            "during start-up (log below)")
            time.sleep(POLL_INTERVAL_S)
        pytest.fail("spalloc-server did not print 'listening on ...' in time (log below)")

    def _await_http_port(self, log_start):
        pattern = re.compile(rb"http listening on 127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = pattern.search(self.log_path.read_bytes()[log_start:])
            if match:
                return int(match.group(1))
            time.sleep(POLL_INTERVAL_S)
        pytest.fail("spalloc-server did not print 'http listening on ...' in time (log below)")

    def url(self, path="/"):
        """The address of a page of the status port."""
        assert self.http_port, "the server was not started with http=True"
        return f"http://127.0.0.1:{self.http_port}{path}"

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    # ---- clients -------------------------------------------------------------------------

    def client(self):
        """A connected `ProtocolClient` (closed at teardown)."""
        c = ProtocolClient("127.0.0.1", self.port)
        c.connect(timeout=TOOL_TIMEOUT_S)
        self._clients.append(c)
        return c

    def job_kwargs(self, **overrides):
        """Keyword arguments for `spalloc_client.Job` that name this server and read no
        configuration file."""
        kwargs = dict(hostname="127.0.0.1", port=self.port, owner=OWNER, config_filenames=[],
                      timeout=TOOL_TIMEOUT_S, reconnect_delay=0.5, keepalive=60.0,
                      machine=None, tags=None, max_dead_boards=0, max_dead_links=None,
                      min_ratio=0.333, require_torus=False)
        kwargs.update(overrides)
        return kwargs

    def job(self, *args, **overrides):
        """A `spalloc_client.Job` on this server (closed at teardown: its keepalive
        subprocess is stopped)."""
        j = Job(*args, **self.job_kwargs(**overrides))
        self._jobs.append(j)
        return j

    def tool(self, name, *args, expect=0, timeout_s=TOOL_TIMEOUT_S, tool_path=None):
        """Run one of the client's command-line tools against this server and return
        (stdout, stderr). `expect` is the exit status it must have (None: any)."""
        path = tool_path or shutil.which(name)
        assert path, f"{name} is not on PATH (is the virtualenv active?)"
        argv = [path, *map(str, args)]
        try:
            done = subprocess.run(argv, cwd=self.home, env=self.tool_env(), timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{' '.join(argv)} did not finish within {timeout_s} s\n"
                        f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}")
        # Shown by pytest (captured stdout) when the test fails.
        print(f"$ {' '.join(argv)}\n-> exit {done.returncode}\n--- stdout\n{done.stdout}"
              f"--- stderr\n{done.stderr}---")
        if expect is not None:
            assert done.returncode == expect, (
                f"{name} exited {done.returncode}, expected {expect}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return done.stdout, done.stderr

    def spawn_tool(self, name, *args):
        """Start a tool in the background; the caller must `finish` it."""
        argv = [shutil.which(name), *map(str, args)]
        print(f"$ {' '.join(argv)} &")
        return subprocess.Popen(argv, cwd=self.home, env=self.tool_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def tool_env(self):
        env = dict(os.environ)
        env["HOME"] = str(self.home)
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        env.pop("XDG_CONFIG_DIRS", None)
        return env

    # ---- queries over the protocol that do not count as keepalives ------------------------

    def live_jobs(self):
        """`list_jobs` on a fresh connection: unlike `get_job_state` it does not reset any
        job's keepalive timer."""
        with ProtocolClient("127.0.0.1", self.port) as c:
            c.connect(timeout=TOOL_TIMEOUT_S)
            return c.list_jobs(timeout=TOOL_TIMEOUT_S)

    def live_job(self, job_id):
        return next((j for j in self.live_jobs() if j["job_id"] == job_id), None)

    def restart(self):
        """Stop the server with SIGTERM and start it again on the same journal and port
        (a warm start: jobs resume)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"spalloc-server ignored SIGTERM for {SERVER_STOP_TIMEOUT_S} s")
        assert status == 0, f"spalloc-server exited {status} on SIGTERM"
        http = ["--http", f"127.0.0.1:{self.http_port}"] if self.http_port else []
        port = self._launch(["--port", str(self.port), *http])
        assert port == self.port

    # ---- teardown ---------------------------------------------------------------------------

    def stop(self):
        """Stop the server with SIGTERM; return a description of anything wrong."""
        problems = []
        for j in self._jobs:
            j.close()
        for c in self._clients:
            c.close()
        if self.process is None:
            pass
        elif self.process.poll() is not None:
            problems.append(f"spalloc-server died during the test (status "
                            f"{self.process.returncode})")
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
                if status != 0:
                    problems.append(f"spalloc-server exited {status} on SIGTERM")
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
                problems.append(f"spalloc-server ignored SIGTERM for "
                                f"{SERVER_STOP_TIMEOUT_S} s and was killed")
        self._log.close()
        if "panicked" in self.log():
            problems.append("spalloc-server panicked")
        return problems


def finish(process, timeout_s=TOOL_TIMEOUT_S):
    """Wait for a `spawn_tool` process; return (returncode, stdout, stderr)."""
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"background tool did not finish within {timeout_s} s\n"
                    f"stdout: {out!r}\nstderr: {err!r}")
    print(f"-> exit {process.returncode}\n--- stdout\n{out}--- stderr\n{err}---")
    return process.returncode, out, err


@pytest.fixture
def server(request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="spalloc-e2e-"))
    srv = Server(workdir)
    request.node.spalloc_server = srv
    try:
        srv.start()
        yield srv
    finally:
        problems = srv.stop()
        request.node.spalloc_server_problems = problems
        if problems:
            pytest.fail("; ".join(problems) + " (server log below)", pytrace=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def http_server(request):
    """A server with its status page (`--http`) on."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="spalloc-e2e-"))
    srv = Server(workdir)
    request.node.spalloc_server = srv
    try:
        srv.start(http=True)
        yield srv
    finally:
        problems = srv.stop()
        request.node.spalloc_server_problems = problems
        if problems:
            pytest.fail("; ".join(problems) + " (server log below)", pytrace=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def where_is_73():
    """Path of `spalloc-where-is` from spalloc 1!7.3.0."""
    return _required_env("SPALLOC_WHERE_IS")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server's log to every failed phase of a test that ran a server."""
    outcome = yield
    report = outcome.get_result()
    srv = getattr(item, "spalloc_server", None)
    if report.failed and srv is not None:
        report.sections.append(("spalloc-server log", srv.log()))


def pytest_collection_finish(session):
    """A run that collects nothing is a failure (pytest's own exit status 5 is easy to
    swallow), and so is one that lost most of its tests."""
    if not session.items and not session.config.option.collectonly:
        pytest.exit("no end-to-end tests were collected", returncode=5)


def pytest_report_header(config):
    return [f"spalloc-server: {os.environ.get('SPALLOC_SERVER')}",
            f"python: {sys.executable}"]
