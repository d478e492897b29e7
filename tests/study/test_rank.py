"""`jscore rank`: one ranking table from extraction (cached) and every score; JSON and CSV."""

import csv
import json
import os

import numpy as np
import pytest

from jscore.cli import main
from tests.study import helpers as h


def test_rank_json_csv_and_cache(tmp_path, capsys):
    data = h.make_dataset(str(tmp_path / "toy.npz"))
    cache = str(tmp_path / "cache")
    csv_path = str(tmp_path / "rank.csv")
    args = ["rank", "--data", f"npz:{data}", "--backbones", "resnet8,mobilenet6", "--image-size", "16",
            "--cache", cache, "--no-progress"]
    assert main(args + ["--json", "--csv", csv_path]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] and {r["model"] for r in rows} == {"resnet8", "mobilenet6"}
    # Values are jscore.score of the cached training-split features; ranks 1 = highest.
    import jscore
    from jscore.features import load_features

    feats = {r["model"]: load_features(os.path.join(cache, p)) for r in rows
             for p in [json.load(open(os.path.join(cache, "records", "extract", f"extract__toy__{r['model']}__train.json")))["result"]["path"]]}
    relative = set()
    for r in rows:
        f = feats[r["model"]]
        alone = jscore.score(f["features"], f["labels"], num_classes=2)
        assert {k: r["scores"][k] for k in alone} == pytest.approx(alone, rel=1e-6)
        relative |= set(r["scores"]) - set(alone)
    # Plus the scores defined relative to the ranked backbones (ETran's min-max combination), as
    # score_zoo combines them over the same models.
    assert relative and relative <= {"etran", "ncti"}
    zoo = jscore.score_zoo({m: {"features": f["features"]} for m, f in feats.items()}, feats[rows[0]["model"]]["labels"],
                           scores=sorted(relative), num_classes=2)
    for r in rows:
        for name in relative:
            assert r["scores"][name] == pytest.approx(zoo[r["model"]][name], rel=1e-5, abs=1e-6)
    for name in rows[0]["scores"]:
        best = max(rows, key=lambda r: r["scores"][name])
        assert best["ranks"][name] == 1
    for r in rows:
        assert r["mean_rank"] == pytest.approx(np.mean(list(r["ranks"].values())))
    assert rows[0]["mean_rank"] <= rows[1]["mean_rank"]
    assert all(r["num_params"] > 0 and r["source_top1"] is None for r in rows)
    with open(csv_path) as fh:
        table = list(csv.DictReader(fh))
    assert [t["model"] for t in table] == [r["model"] for r in rows]
    assert float(table[0]["logme"]) == pytest.approx(rows[0]["scores"]["logme"])
    assert int(table[0]["logme_rank"]) == rows[0]["ranks"]["logme"]
    # Second call: everything cached, the text table.
    before = os.listdir(os.path.join(cache, "features"))
    assert main(args + ["--scores", "logme,gbc"]) == 0
    text = capsys.readouterr().out
    assert "mean rank" in text and "logme" in text and "hscore" not in text
    assert sorted(os.listdir(os.path.join(cache, "features"))) == sorted(before)


def test_rank_source_score_on_headless_backbone(tmp_path, capsys):
    data = h.make_dataset(str(tmp_path / "toy.npz"))
    assert main(["rank", "--data", f"npz:{data}", "--backbones", "resnet8", "--scores", "leep",
                 "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "no source head" in err and not os.path.exists(str(tmp_path / "c"))
