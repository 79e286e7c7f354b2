"""The client library (`spalloc_client.Job`, `ProtocolClient`) against our server.

Machine "spin" (tag default) is 2x2 triads over two frames (frame = triad y), board
(1,1,2) dead and link (0,0,0,north) dead; machine "lone" (tag single) is one board.
Board IPs: spin (x,y,z) -> 10.55.y.(1 + 8*(3x+z)); lone -> 10.55.2.1.
"""

import pytest
from spalloc_client import JobDestroyedError, JobState, SpallocServerException

from conftest import WAIT_TIMEOUT_S, wait_until

NO_SUITABLE_MACHINE = "Cancelled: No suitable machines available."


def state(client, job_id):
    return client.get_job_state(job_id, timeout=WAIT_TIMEOUT_S)


def test_version_is_one_the_client_accepts(server):
    client = server.client()
    assert client.version(timeout=WAIT_TIMEOUT_S) == "1.0.0"


def test_job_on_one_board_as_a_context_manager(server):
    j = server.job()
    with j:  # waits until ready, destroys on exit
        assert j.state == JobState.ready
        assert j.power is True
        assert j.machine_name == "spin"
        assert j.hostname == "10.55.0.1"
        assert (j.width, j.height) == (8, 8)
        assert j.connections == {(0, 0): "10.55.0.1"}
        assert j.boards == [[0, 0, 0]]
        # The board the library reports is where the server says it is.
        assert j.where_is_machine(1, 2) == (0, 0, 0)
    after = state(server.client(), j.id)
    assert after["state"] == JobState.destroyed
    assert after["power"] is None


def test_job_on_a_triad_power_cycles_and_records_the_reason(server):
    j = server.job(1, 1)
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert j.machine_name == "spin"
    assert sorted(map(tuple, j.boards)) == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]
    assert (j.width, j.height) == (16, 16)
    assert j.connections == {(0, 0): "10.55.0.1", (8, 4): "10.55.0.9", (4, 8): "10.55.0.17"}

    j.set_power(False)
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert j.power is False
    j.reset()
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert j.power is True

    j.destroy("finished with it")
    after = state(server.client(), j.id)
    assert after["state"] == JobState.destroyed
    assert after["reason"] == "finished with it"


def test_impossible_job_is_destroyed_with_a_reason(server):
    # 3x3 triads on a 2x2 machine, and the dead board by name: neither can ever run.
    for args, kwargs in [((3, 3), {}), ((1, 1, 2), {}), ((2, 2), {"max_dead_boards": 0}),
                         ((), {"machine": "no-such-machine"}), ((2,), {"tags": ["single"]})]:
        j = server.job(*args, **kwargs)
        with pytest.raises(JobDestroyedError) as failure:
            j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
        assert str(failure.value) == NO_SUITABLE_MACHINE, (args, kwargs)
        j.close()


def test_dead_board_may_be_allowed(server):
    # The whole machine has 12 board positions, one dead: fine with max_dead_boards=1.
    j = server.job(2, 2, max_dead_boards=1)
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert len(j.boards) == 11
    assert [1, 1, 2] not in j.boards
    assert (j.width, j.height) == (24, 24)  # the whole machine: a torus
    assert len(j.connections) == 11
    j.destroy()


def test_dead_link_steers_the_allocation(server):
    # Triad (0,0) has a dead internal link, so with max_dead_links=0 the next candidate
    # of the pack tree (top-left, triad (0,1)) is used instead.
    j = server.job(1, 1, max_dead_links=0)
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert sorted(map(tuple, j.boards)) == [(0, 1, 0), (0, 1, 1), (0, 1, 2)]
    assert j.hostname == "10.55.1.1"
    j.destroy()


def test_queued_job_runs_when_the_machine_frees_and_watchers_are_told(server):
    holder = server.job(2, 2, max_dead_boards=1)
    holder.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    waiter = server.job(1)
    assert waiter.state == JobState.queued
    watcher = server.client()
    watcher.notify_job(waiter.id, timeout=WAIT_TIMEOUT_S)
    info = watcher.get_job_machine_info(waiter.id, timeout=WAIT_TIMEOUT_S)
    assert info == {"width": None, "height": None, "connections": None,
                    "machine_name": None, "boards": None}

    holder.destroy("make room")
    # The waiter starts once the boards are released (after seconds_before_free).
    note = watcher.wait_for_notification(timeout=WAIT_TIMEOUT_S)
    assert note is not None and waiter.id in note.get("jobs_changed", []), note
    waiter.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert waiter.machine_name == "spin"
    assert waiter.boards == [[0, 0, 0]]
    waiter.destroy()


def test_machine_watchers_are_told_about_allocations(server):
    watcher = server.client()
    watcher.notify_machine("lone", timeout=WAIT_TIMEOUT_S)
    everything = server.client()
    everything.notify_machine(None, timeout=WAIT_TIMEOUT_S)

    j = server.job(tags=["single"])
    j.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert j.machine_name == "lone"
    assert j.hostname == "10.55.2.1"
    for c in (watcher, everything):
        note = c.wait_for_notification(timeout=WAIT_TIMEOUT_S)
        assert note == {"machines_changed": ["lone"]}

    # A job on the other machine does not wake the watcher of "lone"...
    other = server.job()
    other.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert everything.wait_for_notification(timeout=WAIT_TIMEOUT_S) == \
        {"machines_changed": ["spin"]}
    # ...but destroying its own job does.
    j.destroy()
    assert watcher.wait_for_notification(timeout=WAIT_TIMEOUT_S) == \
        {"machines_changed": ["lone"]}
    other.destroy()


def test_server_exception_leaves_the_connection_usable(server):
    client = server.client()
    with pytest.raises(SpallocServerException):
        client.call("get_job_state", WAIT_TIMEOUT_S)  # the job id is missing
    with pytest.raises(SpallocServerException, match="owner"):
        client.call("create_job", WAIT_TIMEOUT_S, 1)  # no owner
    assert client.version(timeout=WAIT_TIMEOUT_S) == "1.0.0"


def test_untouched_job_times_out(server):
    client = server.client()
    job_id = client.create_job(WAIT_TIMEOUT_S, owner="ci", keepalive=1.0, tags=None,
                               machine=None, min_ratio=0.333, max_dead_boards=0,
                               max_dead_links=None, require_torus=False)
    # Watch with list_jobs, which (unlike get_job_state) is not a keepalive.
    assert server.live_job(job_id) is not None
    wait_until(lambda: server.live_job(job_id) is None, f"job {job_id} to expire")
    after = state(client, job_id)
    assert after["state"] == JobState.destroyed
    assert after["reason"] == "Job timed out."


def test_the_keepalive_process_keeps_a_job_alive(server):
    # The library's keepalive subprocess sends job_keepalive every keepalive/2 seconds.
    kept = server.job(keepalive=2.0)
    kept.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    # A job created afterwards with the same keepalive and no keepalive process: once it
    # has expired, more than a keepalive period has passed for the first one too.
    raw = server.client().create_job(WAIT_TIMEOUT_S, owner="other", keepalive=2.0,
                                     tags=None, machine=None, min_ratio=0.333,
                                     max_dead_boards=0, max_dead_links=None,
                                     require_torus=False)
    wait_until(lambda: server.live_job(raw) is None, f"job {raw} to expire")
    assert state(server.client(), raw)["reason"] == "Job timed out."
    live = server.live_job(kept.id)
    assert live is not None and live["state"] == JobState.ready, live
    kept.destroy()


def test_jobs_survive_a_server_restart(server):
    held = server.job(1, 1, keepalive=None)
    held.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    queued = server.job(2, 2, max_dead_boards=1, keepalive=None)
    assert queued.state == JobState.queued
    held.close()
    queued.close()

    server.restart()  # SIGTERM, then a warm start on the same journal and port

    client = server.client()
    assert state(client, held.id)["state"] == JobState.ready
    assert state(client, held.id)["power"] is True
    info = client.get_job_machine_info(held.id, timeout=WAIT_TIMEOUT_S)
    assert info["machine_name"] == "spin"
    assert sorted(map(tuple, info["boards"])) == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]
    assert state(client, queued.id)["state"] == JobState.queued
    # The queue still works after the restart, and job ids carry on.
    client.destroy_job(held.id, "restarted", timeout=WAIT_TIMEOUT_S)
    resumed = server.job(resume_job_id=queued.id)
    resumed.wait_until_ready(timeout=WAIT_TIMEOUT_S)
    assert len(resumed.boards) == 11
    later = client.create_job(WAIT_TIMEOUT_S, owner="ci", keepalive=None, tags=["single"],
                              machine=None, min_ratio=0.333, max_dead_boards=0,
                              max_dead_links=None, require_torus=False)
    assert later > queued.id
    assert state(client, held.id)["reason"] == "restarted"
    resumed.destroy()
