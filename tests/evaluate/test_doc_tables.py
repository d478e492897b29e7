"""Markdown blocks that hold `jscore evaluate` output (jscore.commands.doc_tables)."""

import os

import numpy as np
import pandas as pd
import pytest

from jscore.commands import doc_tables


def _tidy(path):
    rng = np.random.default_rng(0)
    rows = []
    for d in ("a", "b"):
        truth = rng.random(5)
        for m in range(5):
            for s, v in (("good", truth[m]), ("noise", rng.random())):
                rows.append({"dataset": d, "model": f"m{m}", "score": s, "value": v, "test_acc": truth[m]})
    pd.DataFrame(rows).to_csv(path, index=False)


DOC = """# A study

<!-- jscore evaluate res.csv --truth test_acc --resamples 50 : tau.md -->
stale text
<!-- end -->

Prose stays.

<!-- jscore evaluate res.csv --truth test_acc --resamples 50 : summary.md -->
<!-- end -->
"""


def test_update_then_check(tmp_path):
    _tidy(str(tmp_path / "res.csv"))
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    assert doc_tables.check(str(doc), str(tmp_path)) == [
        "res.csv --truth test_acc --resamples 50 : tau.md", "res.csv --truth test_acc --resamples 50 : summary.md"]
    assert doc_tables.main([str(doc), "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "stale text" not in text and "Prose stays." in text
    # "good" equals the ground truth: tau 1 on both datasets, the interval collapses to [1, 1].
    assert "| good | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |" in text
    assert doc_tables.check(str(doc), str(tmp_path)) == []
    assert doc_tables.main([str(doc), "--root", str(tmp_path), "--check"]) == 0
    # A changed result makes the document stale.
    df = pd.read_csv(tmp_path / "res.csv")
    df.loc[df["score"] == "good", "value"] *= -1
    df.to_csv(tmp_path / "res.csv", index=False)
    assert len(doc_tables.check(str(doc), str(tmp_path))) == 2
    assert doc_tables.main([str(doc), "--root", str(tmp_path), "--check"]) == 1


def test_unknown_output_file_is_named(tmp_path):
    _tidy(str(tmp_path / "res.csv"))
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- jscore evaluate res.csv --truth test_acc --resamples 20 : nope.md -->\n<!-- end -->\n")
    with pytest.raises(ValueError, match="wrote no nope.md"):
        doc_tables.main([str(doc), "--root", str(tmp_path)])
