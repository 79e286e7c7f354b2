"""The status page (`--http`) in a real browser, and `/metrics` read by a real parser.

Chromium is Debian's (`apt-get install chromium`, at /usr/bin/chromium or
$SPALLOC_CHROMIUM), driven headless by Python `playwright` (from PyPI, without its own
browser downloads). Both are installed by .ci/run; a test that cannot run them fails under
CI=true and is skipped elsewhere.

With $SPALLOC_STATUS_SCREENSHOT set, the live-update test saves a screenshot of the page
with jobs on the map there (how docs/status-page.png was made).
"""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from conftest import WAIT_TIMEOUT_S, wait_until

CHROMIUM = os.environ.get("SPALLOC_CHROMIUM", "/usr/bin/chromium")
# The bound: a change shows on an open page within a second, without a reload.
LIVE_UPDATE_S = 1.0
XSS_OWNER = "<img src=x onerror=alert(1)>"
CONFIG = json.loads((__import__("pathlib").Path(__file__).parent / "machines.json").read_text())


def cannot_run(why):
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run: {why} (under CI=true a test that cannot run fails)")
    pytest.skip(f"cannot run: {why}")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        cannot_run("Python playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        cannot_run(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, http_server):
    """The status page, loaded and live; records dialogs (an XSS would open one) and
    console errors."""
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(http_server.url("/"))
    pg.wait_for_selector("#conn.live", timeout=WAIT_TIMEOUT_S * 1000)
    # A marker that a reload would lose.
    pg.evaluate("window.__not_reloaded = true")
    yield pg
    assert pg.evaluate("window.__not_reloaded === true"), "the page was reloaded"
    assert pg.dialogs == [], f"the page opened dialogs: {pg.dialogs}"
    pg.close()


def http_get(server, path):
    with urllib.request.urlopen(server.url(path), timeout=10) as r:
        return r.status, r.headers, r.read()


def expected_boards(machine):
    """Every board of a configured machine, as (x, y, z) -> (cabinet, frame, board, ip)
    for working ones and None for dead ones."""
    if "single_board" in machine:
        boards = {(0, 0, z): None for z in range(3)}
        boards[(0, 0, 0)] = (0, 0, 0, machine["single_board"]["ip"])
        return boards
    boards = {(x, y, z): None for x in range(machine["width"])
              for y in range(machine["height"]) for z in range(3)}
    for b in machine["boards"]:
        boards[(b["x"], b["y"], b["z"])] = (b["cabinet"], b["frame"], b["board"], b["ip"])
    return boards


def test_page_shows_every_board_with_its_coordinates(page, http_server):
    for machine in CONFIG["machines"]:
        name = machine["name"]
        want = expected_boards(machine)
        polys = page.locator(f'.machine[data-machine="{name}"] polygon.board')
        assert polys.count() == len(want), f"{name}: {polys.count()} boards drawn"
        seen = {}
        for i in range(polys.count()):
            p = polys.nth(i)
            xyz = tuple(int(p.get_attribute(f"data-{k}")) for k in "xyz")
            seen[xyz] = p.get_attribute("data-state")
        assert set(seen) == set(want), name
        for xyz, where in want.items():
            assert seen[xyz] == ("dead" if where is None else "free"), (name, xyz)
        # Hovering a working board shows its logical and physical coordinates and IP.
        xyz, (c, f, b, ip) = next((k, v) for k, v in sorted(want.items()) if v)
        board = page.locator(f'.machine[data-machine="{name}"] polygon.board'
                             f'[data-x="{xyz[0]}"][data-y="{xyz[1]}"][data-z="{xyz[2]}"]')
        board.hover()
        details = page.locator("#details").inner_text()
        assert f"{name} board ({xyz[0]}, {xyz[1]}, {xyz[2]})" in details
        assert f"cabinet {c}, frame {f}, board {b}" in details
        assert f"IP {ip}" in details


def test_job_from_the_real_client_appears_live(page, http_server):
    updates = int(page.evaluate("document.body.dataset.updates"))
    job = http_server.job(2, 1, owner="alice", machine="spin")
    created = time.monotonic()
    row = page.locator(f'#jobs tr[data-job="{job.id}"]')
    row.wait_for(timeout=LIVE_UPDATE_S * 1000)
    page.locator(f'.machine[data-machine="spin"] polygon.board[data-job="{job.id}"]').first \
        .wait_for(timeout=max(0.05, LIVE_UPDATE_S - (time.monotonic() - created)) * 1000)
    assert time.monotonic() - created <= LIVE_UPDATE_S + 0.5  # (the waits above bound it)
    assert int(page.evaluate("document.body.dataset.updates")) > updates
    assert row.locator(".owner").inner_text() == "alice"
    assert row.locator(".on-machine").inner_text() == "spin"
    # 2x1 triads: six boards of machine spin (one of them may be dead: then five).
    drawn = page.locator(f'polygon.board[data-job="{job.id}"]')
    api = json.loads(http_get(http_server, f"/api/jobs/{job.id}")[2])
    assert drawn.count() == len(api["boards"]) >= 5
    # Ready once the (simulated) BMPs have powered the boards: the table and the map follow.
    wait_until(lambda: row.locator(".state").inner_text() == "ready", "the job to show ready")
    assert row.locator(".power").inner_text() == "on"
    assert page.locator(f'polygon.board[data-job="{job.id}"][data-state="job"]').count() \
        == drawn.count()
    left = row.locator(".left").inner_text()
    assert left.endswith("s") and not left.startswith("-"), left
    # A second job queues behind a third that takes the rest: positions are shown.
    lone1 = http_server.job(owner="bob", tags=["single"])
    lone2 = http_server.job(owner="carol", tags=["single"])
    queued = page.locator(f'#queues [data-machine="lone"] li[data-job="{lone2.id}"]')
    queued.wait_for(timeout=WAIT_TIMEOUT_S * 1000)
    assert queued.get_attribute("data-position") == "1"
    assert "carol" in queued.inner_text()
    shot = os.environ.get("SPALLOC_STATUS_SCREENSHOT")
    if shot:
        wait_until(lambda: page.locator('#jobs .state').all_inner_texts().count("ready") >= 2,
                   "two ready jobs for the screenshot")
        page.screenshot(path=shot, full_page=True)
    # Destroyed by its owner: the map frees its boards, the ended list gives the typed reason.
    job.destroy("finished")
    ended = page.locator(f'#ended tr[data-job="{job.id}"]')
    ended.wait_for(timeout=LIVE_UPDATE_S * 1000 + 500)
    assert ended.locator(".reason").inner_text() == "owner"
    assert ended.locator(".text").inner_text() == "finished"
    lone1.destroy()
    lone2.destroy()


def test_hostile_owner_is_shown_as_text(page, http_server):
    job = http_server.job(owner=XSS_OWNER, tags=["single"])
    row = page.locator(f'#jobs tr[data-job="{job.id}"]')
    row.wait_for(timeout=WAIT_TIMEOUT_S * 1000)
    assert row.locator(".owner").inner_text() == XSS_OWNER
    assert page.locator("img").count() == 0
    page.locator(f'polygon.board[data-job="{job.id}"]').hover()
    assert XSS_OWNER in page.locator("#details").inner_text()
    # And the JSON API escapes it as a JSON string.
    status, headers, body = http_get(http_server, f"/api/jobs/{job.id}")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["owner"] == XSS_OWNER


def test_page_reconnects_after_a_restart(page, http_server):
    http_server.restart()
    # The stream broke and came back by itself; a job created now shows without a reload.
    job = http_server.job(owner="after-restart", tags=["single"])
    page.locator(f'#jobs tr[data-job="{job.id}"]').wait_for(timeout=WAIT_TIMEOUT_S * 1000)
    page.wait_for_selector("#conn.live", timeout=WAIT_TIMEOUT_S * 1000)


def test_journal_trouble_shows_as_a_banner(browser, http_server):
    """While the journal cannot be written the page says so above everything else, with
    how long it has lasted. The event is the server's own view with `journal` set to
    failing, served in place of the stream (a full disk, and the event the server then
    sends, are tested through the real server in tests/reliability_disk.rs)."""
    machines = json.loads(http_get(http_server, "/api/machines")[2])
    jobs = json.loads(http_get(http_server, "/api/jobs")[2])
    sent_us = int(time.time() * 1e6)
    status = {
        "version": "test",
        "sent_us": sent_us,
        "facility": {"now_us": sent_us, "machines": machines, "jobs": jobs},
        "ended": [],
        "journal": {"failing": True, "since_us": sent_us - 90_000_000},
    }
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.route("**/events", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body="retry: 100000\nevent: facility\ndata: " + json.dumps(status) + "\n\n"))
    pg.goto(http_server.url("/"))
    banner = pg.locator("#journal")
    banner.wait_for(state="visible", timeout=WAIT_TIMEOUT_S * 1000)
    text = banner.inner_text()
    assert "cannot write its journal" in text and "refuses new jobs" in text, text
    assert "1m 30s" in text or "1m 31s" in text, text
    # The machines are still drawn under it.
    assert pg.locator("polygon.board").count() > 0
    pg.close()
    # The real stream: a healthy journal, no banner.
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.goto(http_server.url("/"))
    pg.wait_for_selector("#conn.live", timeout=WAIT_TIMEOUT_S * 1000)
    assert pg.locator("#journal").is_hidden()
    pg.close()


def test_metrics_parse_with_the_prometheus_parser(http_server):
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        cannot_run("the Python prometheus_client package is not installed")
    job = http_server.job(owner="m", tags=["single"])
    wait_until(lambda: job.state.name == "ready", "the job to be ready")
    job.destroy("done")
    status, headers, body = http_get(http_server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def samples(name, sample_name=None, **labels):
        return [s for s in families[name].samples
                if (sample_name is None or s.name == sample_name)
                and all(s.labels.get(k) == v for k, v in labels.items())]

    boards = {(s.labels["machine"], s.labels["state"]): s.value for s in samples("spalloc_boards")}
    for machine in CONFIG["machines"]:
        want = expected_boards(machine)
        got = {st: v for (m, st), v in boards.items() if m == machine["name"]}
        assert sum(got.values()) == len(want), machine["name"]
        assert got["dead"] == sum(1 for v in want.values() if v is None)
    assert families["spalloc_jobs"].type == "gauge"
    assert families["spalloc_jobs_ended"].type == "counter"
    assert samples("spalloc_jobs_ended", "spalloc_jobs_ended_total", reason="owner")[0].value >= 1
    assert families["spalloc_bmp_requests"].type == "counter"
    ok = samples("spalloc_bmp_requests", "spalloc_bmp_requests_total", outcome="ok")
    assert sum(s.value for s in ok) >= 2  # power on, power off
    dur = families["spalloc_bmp_request_duration_seconds"]
    assert dur.type == "histogram" and dur.unit == "seconds"
    assert sum(s.value for s in dur.samples if s.name.endswith("_count")) >= 2
    fsync = families["spalloc_journal_fsync_duration_seconds"]
    assert fsync.type == "histogram"
    assert [s.value for s in fsync.samples if s.name.endswith("_count")][0] >= 1
    assert samples("spalloc_events_journaled", "spalloc_events_journaled_total")[0].value >= 3
    assert families["spalloc_connected_clients"].type == "gauge"
    assert samples("spalloc_build", "spalloc_build_info")[0].labels["version"]


def test_the_port_is_read_only_and_bounded(http_server):
    req = urllib.request.Request(http_server.url("/api/jobs"), data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(http_server.url("/nothing"), timeout=10)
    assert e.value.code == 404
