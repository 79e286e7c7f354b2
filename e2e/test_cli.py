"""The client's command-line tools (`spalloc`, `spalloc-job`, `spalloc-ps`,
`spalloc-machine`, `spalloc-where-is`) against our server, checking what they print.

Machine "spin" (tag default) is 2x2 triads over two frames (frame = triad y, board number
3x+z), board (1,1,2) dead and link (0,0,0,north) dead; machine "lone" (tag single) is one
board. Board IPs: spin (x,y,z) -> 10.55.y.(1 + 8*(3x+z)); lone -> 10.55.2.1. The tools
read hostname, port and owner ("ci") from the `.spalloc` file in their working directory.
"""

import os
import re
import subprocess
from pathlib import Path

from spalloc_client import JobState

from conftest import OWNER, finish, wait_until

NO_SUITABLE_MACHINE = "Cancelled: No suitable machines available."


def definitions(text):
    """Parse `render_definitions` output ("  Key: value" lines) into a dict; indented
    continuation lines are appended to the previous value, anything else is ignored."""
    out = {}
    key = None
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z][A-Za-z ()-]*): (.*)$", line)
        if not line.strip():
            key = None
        elif m:
            key = m.group(1).strip()
            out[key] = m.group(2).rstrip()
        elif key is not None and line[:1].isspace():
            out[key] += "\n" + line.strip()
    return out


def table(text):
    """Rows of a `render_table` output split on runs of spaces, header first."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def job_id_from(stderr):
    m = re.search(r"Job (\d+):", stderr)
    assert m, f"no job id in: {stderr!r}"
    return int(m.group(1))


def keep_job(server, *args):
    """Create a job with `spalloc --no-destroy --keepalive -1` and return its id."""
    _, err = server.tool("spalloc", "--no-destroy", "--keepalive", "-1", *args, "-c", "true")
    assert "Ready!" in err
    return job_id_from(err)


# ---- spalloc ------------------------------------------------------------------------------


def test_spalloc_runs_a_command_with_substitutions_then_destroys_the_job(server):
    out, err = server.tool(
        "spalloc", "-c", "sh", "-c",
        "echo HOST={hostname} ALSO={} W={w} H={h} WIDTH={width} HEIGHT={height} ID={id}; "
        "cat {ethernet_ips}")
    job_id = job_id_from(err)
    assert f"Job {job_id}: Ready!" in err
    lines = out.splitlines()
    assert lines[0] == (f"HOST=10.55.0.1 ALSO=10.55.0.1 W=8 H=8 WIDTH=8 HEIGHT=8 "
                        f"ID={job_id}")
    assert lines[1:] == ["x,y,hostname", "0,0,10.55.0.1"]  # the {ethernet_ips} CSV
    # The job ended with the command.
    info, _ = server.tool("spalloc-job", job_id)
    assert definitions(info)["State"] == "destroyed"
    assert server.live_jobs() == []


def test_spalloc_passes_on_the_command_exit_status(server):
    _, err = server.tool("spalloc", "--tags", "single", "-c", "sh", "-c", "exit 3", expect=3)
    assert "Ready!" in err


def test_spalloc_lists_every_ethernet_chip_of_a_bigger_job(server):
    out, _ = server.tool("spalloc", "2", "1", "-c", "cat", "{ethernet_ips}")
    assert out.splitlines() == [
        "x,y,hostname",
        "0,0,10.55.0.1", "4,8,10.55.0.17", "8,4,10.55.0.9",
        "12,0,10.55.0.25", "16,8,10.55.0.41", "20,4,10.55.0.33",
    ]


def test_spalloc_without_a_command_prints_the_allocation(server):
    # No terminal: the "press enter" prompt reads end-of-file and the job is destroyed.
    out, err = server.tool("spalloc", "1", "1")
    info = definitions(out)
    assert info["Hostname"] == "10.55.0.1"
    assert info["Width"] == "16"
    assert info["Height"] == "16"
    assert info["Num boards"] == "3"
    assert info["All hostnames"].endswith(".csv")
    assert info["Running on"] == "spin"
    assert server.live_jobs() == []


def test_spalloc_avoids_a_dead_link_when_asked(server):
    out, _ = server.tool("spalloc", "1", "1", "--max-dead-links", "0", "-c", "echo", "{}")
    assert out.strip() == "10.55.1.1"  # triad (0,1): triad (0,0) holds the dead link


def test_spalloc_specific_board_and_machine_and_tags(server):
    out, _ = server.tool("spalloc", "1", "0", "2", "-c", "echo", "{hostname}", "{w}", "{h}")
    assert out.strip() == "10.55.0.41 8 8"
    out, _ = server.tool("spalloc", "--machine", "lone", "-c", "echo", "{hostname}")
    assert out.strip() == "10.55.2.1"
    out, _ = server.tool("spalloc", "--tags", "single")
    assert definitions(out)["Running on"] == "lone"


def test_spalloc_whole_machine_with_its_dead_board(server):
    _, err = server.tool("spalloc", "2", "2", expect=1)  # --max-dead-boards defaults to 0
    assert f"Destroyed: {NO_SUITABLE_MACHINE}" in err
    out, _ = server.tool("spalloc", "2", "2", "--max-dead-boards", "1",
                         "-c", "sh", "-c", "echo {w} {h}; tail -n +2 {ethernet_ips} | wc -l")
    assert out.split() == ["24", "24", "11"]


def test_spalloc_reports_impossible_requests(server):
    for args in (["3", "3"], ["1", "1", "2"], ["0", "5", "0"], ["--machine", "nowhere"],
                 ["2", "--tags", "single"], ["--tags", "no-such-tag"]):
        _, err = server.tool("spalloc", *args, "-c", "true", expect=1)
        job_id = job_id_from(err)
        assert f"Job {job_id}: Destroyed: {NO_SUITABLE_MACHINE}" in err, args
        info, _ = server.tool("spalloc-job", job_id)
        assert definitions(info) == {"Job ID": str(job_id), "State": "destroyed",
                                     "Reason": NO_SUITABLE_MACHINE}


def test_spalloc_waits_in_the_queue_until_boards_are_free(server):
    holder = server.job(2, 2, max_dead_boards=1)
    holder.wait_until_ready(timeout=20)
    waiting = server.spawn_tool("spalloc", "-c", "echo", "RAN", "{hostname}")
    try:
        queued = wait_until(
            lambda: [j for j in server.live_jobs() if j["state"] == JobState.queued],
            "the spalloc job to be queued")
        ps, _ = server.tool("spalloc-ps")
        rows = table(ps)
        assert rows[0] == ["ID", "State", "Power", "Boards", "Machine", "Created at",
                           "Keepalive", "Owner (Host)"]
        queued_row = [r for r in rows if r[0] == str(queued[0]["job_id"])][0]
        assert queued_row[1] == "queue"
        holder.destroy("make room")
    finally:
        status, out, err = finish(waiting)
    assert status == 0
    assert "Waiting in queue..." in err
    assert "Ready!" in err
    assert out.strip() == "RAN 10.55.0.1"


def test_spalloc_resume_keeps_a_job_going(server):
    job_id = keep_job(server, "--tags", "single")
    out, _ = server.tool("spalloc", "--resume", job_id, "-c", "echo", "{id}", "{hostname}")
    assert out.strip() == f"{job_id} 10.55.2.1"
    info, _ = server.tool("spalloc-job", job_id)
    assert definitions(info)["State"] == "destroyed"  # resumed, then destroyed on exit


# ---- spalloc-job --------------------------------------------------------------------------


def test_spalloc_job_info_power_cycle_ips_and_destroy(server):
    job_id = keep_job(server, "1", "1")

    # With no job id the owner's only job is used.
    out, _ = server.tool("spalloc-job")
    info = definitions(out)
    assert info["Job ID"] == str(job_id)
    assert info["Owner"] == OWNER
    assert info["State"] == "ready"
    assert info["Keepalive"] == "None"
    assert info["Owner host"] == "127.0.0.1"
    assert info["Request"].startswith("Job(1, 1,")
    assert "tags=['default']" in info["Request"]
    assert info["Hostname"] == "10.55.0.1"
    assert (info["Width"], info["Height"]) == ("16", "16")
    assert info["Num boards"] == "3"
    assert info["Board power"] == "on"
    assert info["Running on"] == "spin"
    assert re.match(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$", info["Start time"])

    server.tool("spalloc-job", job_id, "--power-off")
    info = definitions(server.tool("spalloc-job", job_id, "--info")[0])
    assert (info["State"], info["Board power"]) == ("ready", "off")
    server.tool("spalloc-job", job_id, "--power-on")
    info = definitions(server.tool("spalloc-job", job_id)[0])
    assert (info["State"], info["Board power"]) == ("ready", "on")
    server.tool("spalloc-job", job_id, "--reset")
    info = definitions(server.tool("spalloc-job", job_id)[0])
    assert (info["State"], info["Board power"]) == ("ready", "on")

    out, _ = server.tool("spalloc-job", job_id, "--ethernet-ips")
    assert out.splitlines() == ["x,y,hostname", "0,0,10.55.0.1", "4,8,10.55.0.17",
                                "8,4,10.55.0.9"]

    server.tool("spalloc-job", job_id, "--destroy", "no longer needed")
    out, _ = server.tool("spalloc-job", job_id)
    assert definitions(out) == {"Job ID": str(job_id), "State": "destroyed",
                                "Reason": "no longer needed"}
    # The boards are released (after seconds_before_free): the whole machine can be had.
    out, _ = server.tool("spalloc", "2", "2", "--max-dead-boards", "1", "-c", "echo", "{w}")
    assert out.strip() == "24"


def test_spalloc_job_destroy_without_a_reason_names_the_owner(server):
    job_id = keep_job(server)
    server.tool("spalloc-job", "--destroy")  # the owner's only job
    out, _ = server.tool("spalloc-job", job_id)
    assert definitions(out)["Reason"] == f"Destroyed by {OWNER}"


def test_spalloc_job_refuses_what_a_queued_job_cannot_do(server):
    holder = server.job(tags=["single"])
    holder.wait_until_ready(timeout=20)
    queued = server.client().create_job(20, owner="someone", keepalive=None, tags=["single"],
                                        machine=None, min_ratio=0.333, max_dead_boards=0,
                                        max_dead_links=None, require_torus=False)
    _, err = server.tool("spalloc-job", queued, "--power-on", expect=8)
    assert err.strip() == f"Error: Cannot power on job {queued} in state queued"
    _, err = server.tool("spalloc-job", queued, "--ethernet-ips", expect=9)
    assert err.strip() == f"Job {queued} is queued or does not exist"
    out, _ = server.tool("spalloc-job", queued)
    info = definitions(out)
    assert (info["Owner"], info["State"]) == ("someone", "queued")
    assert "Board power" not in info and "Hostname" not in info


def test_spalloc_job_with_several_or_no_jobs(server):
    _, err = server.tool("spalloc-job", expect=3)
    assert err.strip() == f"Owner {OWNER} has no live jobs"
    first = keep_job(server)
    second = keep_job(server)
    _, err = server.tool("spalloc-job", expect=3)
    assert err.strip() == f"Ambiguous: {OWNER} has 2 live jobs: {first}, {second}"
    out, _ = server.tool("spalloc-job", "9999")
    assert definitions(out) == {"Job ID": "9999", "State": "unknown"}


def test_spalloc_job_reports_a_job_that_timed_out(server):
    job_id = server.client().create_job(20, owner=OWNER, keepalive=1.0, tags=None,
                                        machine=None, min_ratio=0.333, max_dead_boards=0,
                                        max_dead_links=None, require_torus=False)
    # list_jobs is not a keepalive, so polling it does not keep the job alive.
    wait_until(lambda: server.live_job(job_id) is None, f"job {job_id} to time out")
    out, _ = server.tool("spalloc-job", job_id)
    assert definitions(out) == {"Job ID": str(job_id), "State": "destroyed",
                                "Reason": "Job timed out."}


# ---- spalloc-ps ---------------------------------------------------------------------------


def test_spalloc_ps_lists_live_jobs(server):
    out, _ = server.tool("spalloc-ps")
    assert table(out) == [["ID", "State", "Power", "Boards", "Machine", "Created at",
                           "Keepalive", "Owner (Host)"]]
    mine = keep_job(server, "1", "1")
    theirs = server.job(tags=["single"], owner="someone", keepalive=30.0)
    theirs.wait_until_ready(timeout=20)

    rows = table(server.tool("spalloc-ps")[0])
    assert len(rows) == 3
    by_id = {int(r[0]): r for r in rows[1:]}
    assert by_id[mine][1:5] == ["ready", "on", "3", "spin"]
    assert re.match(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$", by_id[mine][5])
    assert by_id[mine][6:] == ["None", f"{OWNER} (127.0.0.1)"]
    assert by_id[theirs.id][1:5] == ["ready", "on", "1", "lone"]
    assert by_id[theirs.id][6:] == ["30.0", "someone (127.0.0.1)"]

    rows = table(server.tool("spalloc-ps", "--owner", "someone")[0])
    assert [r[0] for r in rows[1:]] == [str(theirs.id)]
    rows = table(server.tool("spalloc-ps", "--machine", "spin")[0])
    assert [r[0] for r in rows[1:]] == [str(mine)]


# ---- spalloc-machine ----------------------------------------------------------------------


def test_spalloc_machine_lists_machines_and_their_load(server):
    out, _ = server.tool("spalloc-machine")
    assert table(out) == [["Name", "Num boards", "In-use", "Jobs", "Tags"],
                          ["spin", "11", "0", "0", "default"],
                          ["lone", "1", "0", "0", "single"]]
    keep_job(server, "1", "1")
    keep_job(server, "1", "0", "0")
    out, _ = server.tool("spalloc-machine")
    assert table(out)[1] == ["spin", "11", "4", "2", "default"]


def test_spalloc_machine_draws_one_machine(server):
    out, _ = server.tool("spalloc-machine", "spin")
    info = definitions(out)
    assert (info["Name"], info["Tags"], info["In-use"], info["Jobs"]) == \
        ("spin", "default", "0 of 11", "0")
    assert out.count(" . ") == 11  # one label per live board; the dead one is not drawn

    job_id = keep_job(server, "1", "1")
    out, _ = server.tool("spalloc-machine", "spin")
    assert definitions(out)["In-use"] == "3 of 11"
    assert out.count(" . ") == 8
    assert out.count(" A ") == 3  # the job's boards, labelled with its key
    assert f"A:{job_id}" in out  # the compact key list

    out, _ = server.tool("spalloc-machine", "spin", "--detailed")
    rows = table(out.split("\n\n")[-1])
    assert rows == [["Key", "Job ID", "Num boards", "Owner (Host)"],
                    ["A", str(job_id), "3", f"{OWNER} 127.0.0.1"]]

    _, err = server.tool("spalloc-machine", "nowhere", expect=6)
    assert err.strip() == "No machine 'nowhere' was found"


def test_spalloc_machine_shows_drained_and_reported_boards_as_dead(server):
    """Board health through the real client: a board drained with `spalloc-admin` and one
    reported twice with `report_problem` (the Java server's v1 form, sent with the client's
    own `ProtocolClient.call`) are drawn as dead and counted out by `spalloc-machine`."""
    admin = Path(os.environ["SPALLOC_SERVER"]).parent / "spalloc-admin"
    assert admin.exists(), f"{admin} is not built beside the server"
    done = subprocess.run([str(admin), "--journal", str(server.journal), "drain", "spin",
                           "0", "0", "1", "--reason", "fan broken"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    out, _ = server.tool("spalloc-machine")
    assert table(out)[1] == ["spin", "10", "0", "0", "default"]
    c = server.client()
    # Board (1, 0, 0) of spin: IP 10.55.0.(1 + 8*3).
    for words in ("core 3 is dead", "and it stays dead"):
        assert c.call("report_problem", 10, "10.55.0.25", x=0, y=0, p=3,
                      description=words) is None
    out, _ = server.tool("spalloc-machine", "spin")
    assert definitions(out)["In-use"] == "0 of 9"
    assert out.count(" . ") == 9
    # The client's view matches the server's: both boards are dead to new jobs.
    _, err = server.tool("spalloc", "1", "0", "0", "-c", "true", expect=1)
    assert NO_SUITABLE_MACHINE in err


# ---- spalloc-where-is ---------------------------------------------------------------------


def test_spalloc_where_is_all_four_query_styles(server, where_is_73):
    job_id = keep_job(server, "1", "0", "1")  # board (1,0,1): cabinet 0, frame 0, board 4

    def where(*args, expect=0):
        out, err = server.tool("spalloc-where-is", *args, expect=expect, tool_path=where_is_73)
        return definitions(out), err

    info, _ = where("--board", "spin", 1, 0, 1)
    assert info == {"Machine": "spin", "Physical location": "Cabinet 0, Frame 0, Board 4",
                    "Board coordinate": "(1, 0, 1)", "Machine chip coordinates": "(20, 4)",
                    "Job using board": str(job_id), "Coordinates within job": "(0, 0)"}

    info, _ = where("--physical", "spin", 0, 1, 4)
    assert info == {"Machine": "spin", "Physical location": "Cabinet 0, Frame 1, Board 4",
                    "Board coordinate": "(1, 1, 1)", "Machine chip coordinates": "(20, 16)",
                    "Job using board": "None"}

    info, _ = where("--chip", "spin", 21, 5)
    assert info == {"Machine": "spin", "Physical location": "Cabinet 0, Frame 0, Board 4",
                    "Board coordinate": "(1, 0, 1)", "Machine chip coordinates": "(21, 5)",
                    "Coordinates within board": "(1, 1)", "Job using board": str(job_id),
                    "Coordinates within job": "(1, 1)"}

    expected_job_chip = {
        "Machine": "spin", "Physical location": "Cabinet 0, Frame 0, Board 4",
        "Board coordinate": "(1, 0, 1)", "Machine chip coordinates": "(0, 9)",
        "Coordinates within board": "(4, 5)", "Job using board": str(job_id),
        "Coordinates within job": "(4, 5)"}
    # Chip (4,5) of the job is chip (24,9) of the machine, which wraps round to (0,9).
    info, _ = where("--job-chip", job_id, 4, 5)
    assert info == expected_job_chip
    # --job-chip also works with the current client (1!7.4.1).
    out, _ = server.tool("spalloc-where-is", "--job-chip", job_id, 4, 5)
    assert definitions(out) == expected_job_chip

    # Nothing there: the dead board, a machine that does not exist, a job that does not.
    for args in (["--board", "spin", 1, 1, 2], ["--physical", "spin", 0, 1, 5],
                 ["--chip", "nowhere", 0, 0], ["--job-chip", 9999, 0, 0]):
        info, err = where(*args, expect=4)
        assert info == {} and err.strip() == "No boards at the specified location", args
