"""Two CPU processes under `jax.distributed` divide a study's units and merge the records: the
result equals the one-process run's."""

import os
import socket
import sys


from tests.study import helpers as h

SCRIPT = """
import sys, jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jscore.cli import main
code = main(["study", sys.argv[3], "--no-progress"])
print("PROCESS", jax.process_index(), "OF", jax.process_count(), flush=True)
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tiny, tmp_path):
    """The reference ran in one process with 8 host devices; here each process has one device
    (extraction, scoring and the probe use one device either way)."""
    root, data, _, ref_out = tiny
    out = str(tmp_path / "two")
    cfg = h.write_config(str(tmp_path / "two.toml"), data, out)
    addr = f"localhost:{_free_port()}"
    env = h.env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    outs, _ = h.run_together([[sys.executable, "-c", SCRIPT, addr, str(i), cfg] for i in range(2)], env)
    assert "PROCESS 0 OF 2" in outs[0][0] and "PROCESS 1 OF 2" in outs[1][0]
    got, ref = h.records(out), h.records(ref_out)
    assert set(got) == set(ref)
    # Both processes did work (units are divided by position in the plan).
    assert {r["process"] for r in got.values()} == {0, 1}
    for k in ref:
        if k[0] != "evaluate":
            assert h.comparable(got[k]) == h.comparable(ref[k]), k
    assert got[("evaluate", "evaluate")]["result"]["summary"] == ref[("evaluate", "evaluate")]["result"]["summary"]
    assert os.path.isfile(os.path.join(out, "report.html"))
