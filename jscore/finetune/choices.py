"""The named choices of a fine-tuning recipe, in one place for the training code, the study
config and the command line (standard library only: importing it loads no jax)."""

# The new head's start: PyTorch nn.Linear's initialisation, or the linear probe's (LP-FT).
HEAD_INITS = ("random", "probe")
# The optimiser: SGD with Nesterov momentum (the DART recipe), or AdamW.
OPTIMIZERS = ("sgd", "adamw")
