"""Markdown documents whose tables are `jscore evaluate` output, pasted verbatim and checkable.

A block in a markdown file:

    <!-- jscore evaluate results/medical/results_probe.csv --truth test_balanced_accuracy : summary.md -->
    | score | grouped tau | ... |
    <!-- end -->

holds the file `summary.md` (or `tau.md`, `wtau.md`, any text file the command writes) that
`jscore evaluate <arguments> --out <tmp>` writes, paths relative to the repository root (the
`root` argument). `update` rewrites every block from a fresh run; `check` says which blocks differ
from what the command computes now. So a published document cannot drift from its stored
results: a test runs `check` (see tests/test_published_study.py).

    python -m jscore.commands.doc_tables docs/study.md            # rewrite the blocks
    python -m jscore.commands.doc_tables docs/study.md --check    # exit 1 if a block is stale
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import tempfile
from typing import Dict, List, Tuple

BLOCK = re.compile(r"^(<!-- jscore evaluate (?P<args>[^\n]+?) : (?P<file>[\w.-]+) -->\n)(?P<body>.*?)(^<!-- end -->)",
                   re.S | re.M)


def _run(args: str, root: str, cache: Dict[str, str]) -> str:
    """Run `jscore evaluate ARGS --out TMP` from `root` once per distinct ARGS -> the TMP folder."""
    if args not in cache:
        import argparse

        from jscore.commands import evaluate

        out = tempfile.mkdtemp(prefix="jscore-doc-")
        argv = [*shlex.split(args), "--out", out]
        if "--no-plots" not in argv:
            argv.append("--no-plots")  # the tables do not depend on the figure
        parser = argparse.ArgumentParser(prog="jscore evaluate")
        evaluate.add_arguments(parser)
        here = os.getcwd()
        try:
            os.chdir(root)
            with contextlib.redirect_stdout(io.StringIO()):
                evaluate.run(parser.parse_args(argv))
        finally:
            os.chdir(here)
        cache[args] = out
    return cache[args]


def inputs_of(args: str) -> List[str]:
    """The results files a block's `jscore evaluate` arguments read."""
    import argparse

    from jscore.commands import evaluate

    parser = argparse.ArgumentParser(prog="jscore evaluate")
    evaluate.add_arguments(parser)
    return list(parser.parse_args([*shlex.split(args), "--out", "-"]).results)


def blocks(text: str) -> List[Tuple[str, str, str]]:
    """The (arguments, file, body) of every block of `text`, in order."""
    return [(m["args"], m["file"], m["body"]) for m in BLOCK.finditer(text)]


def render(text: str, root: str, *, skip_missing: bool = False) -> str:
    """`text` with every block's body replaced by the file its command writes now. With
    `skip_missing`, a block whose input files are not under `root` is left as it is."""
    cache: Dict[str, str] = {}

    def fill(m):
        if skip_missing and any(not os.path.exists(os.path.join(root, f)) for f in inputs_of(m["args"])):
            return m.group(0)
        folder = _run(m["args"], root, cache)
        path = os.path.join(folder, m["file"])
        if not os.path.isfile(path):
            raise ValueError(f"jscore evaluate {m['args']}: wrote no {m['file']} (it writes {sorted(os.listdir(folder))})")
        with open(path) as fh:
            body = fh.read()
        return m.group(1) + body + ("" if body.endswith("\n") else "\n") + m.group(5)

    return BLOCK.sub(fill, text)


def check(path: str, root: str, *, skip_missing: bool = False) -> List[str]:
    """The blocks of the file at `path` whose body differs from a fresh run: their arguments and
    file, as 'ARGS : FILE' lines (empty when the document is up to date). With `skip_missing`,
    blocks whose input files are absent (e.g. third-party files not shipped) are not checked."""
    with open(path) as fh:
        text = fh.read()
    fresh = render(text, root, skip_missing=skip_missing)
    return [f"{a} : {f}" for (a, f, b), (_, _, nb) in zip(blocks(text), blocks(fresh)) if b != nb]


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m jscore.commands.doc_tables", description=__doc__.split("\n")[0])
    p.add_argument("doc", help="markdown file with jscore evaluate blocks")
    p.add_argument("--root", default=".", help="folder the commands' paths are relative to (default: .)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 when a block is stale")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave blocks whose input files are absent as they are (e.g. third-party CSVs not shipped)")
    a = p.parse_args(argv)
    if a.check:
        stale = check(a.doc, a.root, skip_missing=a.skip_missing)
        for line in stale:
            print(f"stale: {line}")
        return 1 if stale else 0
    with open(a.doc) as fh:
        text = fh.read()
    if not blocks(text):
        print(f"{a.doc}: no jscore evaluate blocks", file=sys.stderr)
        return 1
    new = render(text, a.root, skip_missing=a.skip_missing)
    with open(a.doc, "w") as fh:
        fh.write(new)
    print(f"{a.doc}: {len(blocks(text))} block(s) written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
