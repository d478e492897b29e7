"""The named choices of a fine-tuning recipe, in one place for the training code, the study
config and the command line (standard library only: importing it loads no jax)."""

# The new head's start: PyTorch nn.Linear's initialisation, or the linear probe's (LP-FT).
HEAD_INITS = ("random", "probe")
# The optimiser: SGD with Nesterov momentum (the DART recipe), or AdamW.
OPTIMIZERS = ("sgd", "adamw")
# BatchNorm during full fine-tuning: "train" (batch statistics in each step, running averages
# updated: PyTorch's model.train(), the DART recipe) or "frozen" (the backbone runs in inference
# mode: its running statistics are used and kept; BatchNorm's scale and offset still train).
BATCH_NORM_MODES = ("train", "frozen")

# The value each choice had before it existed: a recipe at these values hashes without the field,
# so run ids and study unit keys made before the choice stay the same.
LEGACY_DEFAULTS = {"head_init": "random", "optimizer": "sgd", "batch_norm": "train"}


def drop_legacy_defaults(fields: dict) -> dict:
    """A copy of a recipe's `fields` without the choices set to their `LEGACY_DEFAULTS` value."""
    return {k: v for k, v in fields.items() if not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}
