"""Unit claims: independent `jscore study --claim` processes share a study's units, each unit run
once, the records equal to one process's; stale claims (a dead process, an unrefreshed one) are
taken over; a live claim is respected."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from jscore.study import claims
from tests.study import helpers as h


def _write_claim(path, host, pid, age_s=0.0):
    with open(path, "w") as fh:
        json.dump({"host": host, "pid": pid}, fh)
    t = time.time() - age_s
    os.utime(path, (t, t))


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_live_claim_is_respected_and_stale_ones_are_taken(tmp_path):
    path = str(tmp_path / "u.json.claim")
    here = socket.gethostname()
    _write_claim(path, here, os.getppid())  # a live process of this host (our parent)
    assert claims.take(path) is None
    _write_claim(path, here, _dead_pid())  # its process is gone
    held = claims.take(path)
    assert held is not None
    assert json.load(open(path)) == {"host": here, "pid": os.getpid()}
    held.release()
    assert not os.path.exists(path)
    _write_claim(path, "another-host", 1, age_s=10.0)  # another host's, refreshed recently
    assert claims.take(path) is None
    _write_claim(path, "another-host", 1, age_s=claims.STALE_S + 5)  # not refreshed: crashed
    held = claims.take(path)
    assert held is not None
    held.release()


def test_claim_is_refreshed_while_held_and_release_spares_a_takeover(tmp_path):
    path = str(tmp_path / "u.json.claim")
    held = claims.take(path, refresh_s=0.05)
    with held:
        t = time.time() - 200
        os.utime(path, (t, t))
        time.sleep(0.3)
        assert time.time() - os.path.getmtime(path) < 5  # the heartbeat touched it again
    assert not os.path.exists(path)
    held = claims.take(path)
    _write_claim(path, "another-host", 7)  # taken over by another process meanwhile
    held.release()
    assert json.load(open(path)) == {"host": "another-host", "pid": 7}  # not ours: left alone


RACE = """
import os, sys, time
from jscore.study import claims
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
held = claims.take(sys.argv[1])
print("got" if held is not None else "no", flush=True)
time.sleep(3)
"""


def test_one_of_many_concurrent_claimants_wins(tmp_path):
    path, go = str(tmp_path / "u.json.claim"), str(tmp_path / "go")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, path, go], env=h.env(), cwd=h.REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1.5)
    open(go, "w").close()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["got"] + ["no"] * 5


def _ran(stderr: str) -> dict:
    m = re.search(r"ran (.*) unit\(s\)", stderr)
    assert m, stderr[-2000:]
    return {k: int(v) for k, v in (x.split() for x in m.group(1).split(", "))}


def test_two_claiming_processes_equal_one(tiny, tmp_path):
    root, data, _, ref_out = tiny
    out = str(tmp_path / "two")
    cfg = h.write_config(str(tmp_path / "two.toml"), data, out)
    env = h.env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    outs, pids = h.run_together([h.jscore_cmd("study", cfg, "--claim", "--no-progress")] * 2, env)
    got, ref = h.records(out), h.records(ref_out)
    assert set(got) == set(ref)
    for k in ref:
        if k[0] != "evaluate":
            assert h.comparable(got[k]) == h.comparable(ref[k]), k
    assert got[("evaluate", "evaluate")]["result"]["summary"] == ref[("evaluate", "evaluate")]["result"]["summary"]
    # Each unit ran exactly once between the two, and nothing is left claimed.
    ran = [_ran(e) for _, e in outs]
    for stage in ("extract", "score", "truth", "evaluate"):
        n = sum(1 for k in ref if k[0] == stage)
        assert ran[0][stage] + ran[1][stage] == n, (stage, ran)
    workers = {r["worker"] for r in got.values()}
    assert workers <= {f"{socket.gethostname()}:{pid}" for pid in pids}
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if f.endswith((".claim", ".stale", ".failed"))]
    assert leftovers == []


def test_a_dead_process_claim_does_not_block_and_a_live_one_is_waited_for(tiny, tmp_path):
    from jscore.cli import main
    from jscore.study import load_config, make_plan
    from jscore.study.runner import run_plan

    root, data, _, ref_out = tiny
    out = str(tmp_path / "one")
    cfg = h.write_config(str(tmp_path / "one.toml"), data, out)
    plan = make_plan(load_config(cfg))
    first = plan.units["extract"][0]
    os.makedirs(os.path.dirname(plan.record_path(first)), exist_ok=True)
    _write_claim(plan.record_path(first) + ".claim", socket.gethostname(), _dead_pid())
    assert main(["study", cfg, "--claim", "--no-progress"]) == 0
    assert h.comparable(h.records(out)[("extract", first.id)]) == h.comparable(h.records(ref_out)[("extract", first.id)])
    # A unit a live process holds (and never finishes) is waited for, then reported by name.
    os.remove(plan.record_path(first))
    _write_claim(plan.record_path(first) + ".claim", socket.gethostname(), os.getppid())
    with pytest.raises(RuntimeError, match=f"waiting for 1 extract unit.*{re.escape(first.id)}"):
        run_plan(make_plan(load_config(cfg)), stages=("extract",), progress=False, claim=True, wait_timeout_s=2.0)


def test_claim_and_distributed_together_is_an_error(tiny, tmp_path, capsys):
    from jscore.cli import main

    _, data, _, _ = tiny
    cfg = h.write_config(str(tmp_path / "c.toml"), data, str(tmp_path / "c"))
    assert main(["study", cfg, "--claim", "--distributed"]) == 2
    assert "--claim and --distributed" in capsys.readouterr().err
