"""Tiny studies for the end-to-end tests: a structured 16 px dataset, three zoo backbones."""

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BACKBONES = ["resnet8", "mobilenet6"]


def make_dataset(path: str, seed: int = 0) -> str:
    """2 classes that differ in brightness and in a bright square's position: 40/16/16 images."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 40), ("val", 16), ("test", 16)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, (n, 16, 16)).astype(np.int64)
        images += 60 * labels[:, None, None]
        for i, y in enumerate(labels):
            r = 2 if y == 0 else 10
            images[i, r : r + 4, r : r + 4] = 255
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


def write_config(path: str, data: str, out: str, *, backbones=None, scores="all", search="grid:2x1", epochs=2,
                 extra: str = "") -> str:
    names = ", ".join(f'"{b}"' for b in (backbones or BACKBONES))
    with open(path, "w") as fh:
        fh.write(f"""# a tiny study
name = "tiny"
out = "{out}"
image_size = 16
scores = {json.dumps(scores)}
bootstrap = 50
batch_size = 16
backbones = [{names}]
{extra}
[[datasets]]
name = "toy"
data = "npz:{data}"

[ground_truth]
recipe = "probe"
search = "{search}"
epochs = {epochs}
batch_size = 16
""")
    return path


def records(out: str) -> dict:
    """{(stage, id): record} of a study folder."""
    got = {}
    folder = os.path.join(out, "records")
    for stage in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        for f in sorted(os.listdir(os.path.join(folder, stage))):
            if f.endswith(".json"):
                with open(os.path.join(folder, stage, f)) as fh:
                    got[(stage, f[:-5])] = json.load(fh)
    return got


TIMING = {"wall_time_s", "train_time_s", "images_per_s", "compile_s", "device", "report"}


def comparable(rec: dict) -> dict:
    """A record's key and result without the run's own measurements (times, device, paths)."""
    result = {k: v for k, v in rec["result"].items() if k not in TIMING}
    return {"key": rec["key"], "result": result}


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("JAX_PLATFORMS", "cpu")
    return e


def jscore_cmd(*args):
    return [sys.executable, "-m", "jscore", *args]


def run_together(commands, env, timeout=900):
    """Start every command at once (cwd the repository) and wait for all -> [(stdout, stderr)];
    each must exit 0. Generous timeout: CI shares its cores. All are killed if one times out."""
    procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return outs, [p.pid for p in procs]


def run_cli(*args, timeout=300):
    return subprocess.run(jscore_cmd(*args), env=env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
