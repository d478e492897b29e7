"""A whole study from one config file: datasets x backbones -> features -> every score ->
ground truth -> evaluation and report. See docs/study-command.md.

    >>> from jscore.study import load_config, make_plan, run_plan
    >>> plan = make_plan(load_config("study.toml"))
    >>> run_plan(plan)          # skips finished units; divides the rest over jax processes

Modules: `config` (the TOML file, checked up front), `plan` (units and their keys), `runner`
(records, resume, processes), `report` (tables, report.md / report.html, `jscore rank`'s table).
"""

from jscore.study.config import StudyConfig, from_dict, load_config
from jscore.study.plan import STAGES, Plan, Unit, estimate, format_plan, make_plan
from jscore.study.runner import run_plan

__all__ = ["StudyConfig", "from_dict", "load_config", "STAGES", "Plan", "Unit", "estimate", "format_plan",
           "make_plan", "run_plan"]
