"""The `jscore` command line: one sub-command per stage, each in `jscore/commands/<name>.py`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `jscore score` never loads flax or TFDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "score": ("jscore.commands.score", "score a feature file (or --demo) with every transferability score"),
    "extract": ("jscore.commands.extract", "extract backbone features and source logits from a dataset"),
    "finetune": ("jscore.commands.finetune", "fine-tune a backbone with a hyper-parameter search (ground truth)"),
    "evaluate": ("jscore.commands.evaluate", "compare scores with ground truth: Kendall tau, intervals, plots"),
    "rank": ("jscore.commands.rank", "rank backbones for a dataset: extract (cached), every score, one table"),
    "study": ("jscore.commands.study", "a whole study from a TOML config: features, scores, ground truth, report"),
    "zoo": ("jscore.commands.zoo", "list the known backbones: source task, published top-1, size, where weights come from"),
}


def build_parser() -> argparse.ArgumentParser:
    from jscore import __version__

    parser = argparse.ArgumentParser(prog="jscore", description="Transferability scoring in JAX.")
    parser.add_argument("--version", action="version", version=f"jscore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            p.set_defaults(_missing=True)
            continue
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"jscore {args.command}: not available in this version", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except ValueError as err:
        # Bad input is reported as one clear line, not a traceback.
        print(f"jscore {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"jscore {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
