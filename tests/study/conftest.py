"""One finished reference study shared by the study and distributed tests (run in this process)."""

import pytest

from tests.study import helpers as h


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(root, data, config, out) of a finished tiny study."""
    from jscore.cli import main

    root = tmp_path_factory.mktemp("study")
    data = h.make_dataset(str(root / "toy.npz"))
    out = str(root / "ref")
    cfg = h.write_config(str(root / "study.toml"), data, out)
    assert main(["study", cfg, "--no-progress"]) == 0
    return root, data, cfg, out
