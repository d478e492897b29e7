"""docs/study.md's tables are what `jscore evaluate` computes from the stored results in results/.

Every `<!-- jscore evaluate ARGS : FILE -->` block of the page is recomputed from the committed
CSVs (which the study's evaluate stage wrote from its records) and must equal the page.
"""

import os

import pytest

from jscore.commands import doc_tables

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC = os.path.join(ROOT, "docs", "study.md")


def test_study_page_has_tables_from_results():
    text = open(DOC).read()
    found = doc_tables.blocks(text)
    assert found, "docs/study.md has no jscore evaluate blocks"
    ours = [args for args, _, _ in found if all(f.startswith("results/") for f in doc_tables.inputs_of(args))]
    assert len(ours) >= 4, "docs/study.md has too few tables of our own results"
    for args in ours:  # our own results are committed: every input is here
        for f in doc_tables.inputs_of(args):
            assert os.path.isfile(os.path.join(ROOT, f)), f
    for args, _, body in found:
        assert body.startswith("| "), (args, body[:80])


def test_study_page_tables_equal_jscore_evaluate_of_results():
    # Third-party files (the published papers' results) are not shipped: their blocks are checked
    # where they are present beside the checkout (../shared/published), as on the study machine.
    stale = doc_tables.check(DOC, ROOT, skip_missing=True)
    assert stale == [], ("docs/study.md differs from jscore evaluate on results/ in these blocks "
                         f"(python -m jscore.commands.doc_tables docs/study.md rewrites them): {stale}")


@pytest.mark.parametrize("study", ["medical", "cifar_zoo"])
def test_published_config_reruns_nothing(study):
    """The committed records make the published config's finished units done on this machine."""
    from jscore.study import load_config, make_plan

    cfg = load_config(os.path.join(ROOT, "results", f"{study}.toml"))
    plan = make_plan(cfg)
    scored = [u for u in plan.units["score"] if plan.is_done(u)]
    assert scored, f"no finished score unit of results/{study}.toml"
    for u in scored:  # a finished scoring's features are finished too: no extraction reruns for it
        src = next(e for e in plan.units["extract"] if e.id == u.args["features"])
        assert plan.is_done(src), src.id
    # Every committed record is of a unit the config still plans, with the key it plans it with:
    # a change to how keys are formed (a recipe field, a default) would orphan the published runs.
    for stage in ("extract", "score", "truth"):
        folder = os.path.join(plan.config.out, "records", stage)
        stored = {f[:-5] for f in os.listdir(folder) if f.endswith(".json")} if os.path.isdir(folder) else set()
        planned = {u.id: u for u in plan.units[stage]}
        assert stored <= set(planned), (stage, sorted(stored - set(planned))[:3])
        stale = [i for i in stored if not plan.is_done(planned[i])]
        assert not stale, f"records of results/{study} whose key the config no longer gives: {sorted(stale)[:3]}"
