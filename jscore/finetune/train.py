"""Pure train and evaluation steps: a backbone with a new linear head, cross-entropy, optax.

One functional model: `params = {"backbone": <the backbone's "params">, "head": {"kernel" [D, C],
"bias" [C]}}` plus `model_state` (the backbone's other collections, e.g. BatchNorm statistics).
The backbone's source head, if any, is ignored: the new head reads the penultimate features.

Linear probing is the same step with an optax mask that freezes the backbone (its update is
`set_to_zero`, it keeps no optimiser state, its features are under `stop_gradient`, and it runs
in inference mode so BatchNorm statistics stay as they are).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jscore.backbones import conv_gradients
from jscore.backbones.base import Backbone
from jscore.finetune.augment import AugmentConfig
from jscore.finetune.choices import BATCH_NORM_MODES, HEAD_INITS, OPTIMIZERS
from jscore.finetune.metrics import confusion_matrix


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every number of one run. Defaults reproduce the paper's recipe."""

    learning_rate: float = 0.01
    weight_decay: float = 1e-5
    momentum: float = 0.9
    nesterov: bool = True
    end_learning_rate: float = 1e-6  # the cosine schedule ends here
    epochs: int = 100
    batch_size: int = 128
    eval_batch_size: int = 256
    mode: str = "full"  # "full" fine-tuning or "probe" (frozen backbone)
    compute_dtype: str = "float32"  # or "bfloat16": forward/backward in bf16, float32 master weights
    augment: bool = True
    augment_config: AugmentConfig = AugmentConfig()
    seed: int = 0
    # "random": PyTorch's nn.Linear initialisation; "probe": LP-FT (full mode only), the head
    # starts at the logistic regression on the frozen features (`jscore.finetune.head_init`).
    head_init: str = "random"
    # "sgd" (the paper's: Nesterov momentum, coupled weight decay) or "adamw" (Adam with
    # decoupled weight decay, Loshchilov & Hutter 2019; momentum and nesterov unused).
    optimizer: str = "sgd"
    # "train" (the paper's: batch statistics, running averages updated) or "frozen": the backbone
    # trains in inference mode, so BatchNorm uses and keeps its pretrained running statistics
    # (and dropout, where a backbone has it, is off). Full mode only; a probe is always frozen.
    # Why: with a short schedule the running averages (momentum 0.99 in the TF-trained
    # EfficientNet-Lite) lag behind the target's batch statistics, so evaluation sees features
    # that training never did (docs/finetune.md, "BatchNorm").
    batch_norm: str = "train"
    # Memory, not the recipe: > 0 splits each training batch into micro-batches of this size
    # whose gradients are summed before the one optimiser update, so activations are held for
    # `micro_batch_size` images at a time. The same computation as the whole batch (to float
    # round-off) when the backbone keeps no batch statistics in training (batch_norm="frozen",
    # or a backbone without BatchNorm), the only case allowed; not part of a run's id.
    micro_batch_size: int = 0

    def validate(self) -> None:
        if self.mode not in ("full", "probe"):
            raise ValueError(f"mode must be 'full' or 'probe', got {self.mode!r}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}")
        if self.head_init == "probe" and self.mode != "full":
            raise ValueError("head_init='probe' (LP-FT) applies to full fine-tuning; a probe already trains only the head")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.optimizer != "sgd" and self.mode != "full":
            raise ValueError(f"optimizer={self.optimizer!r} applies to full fine-tuning; the probe's recipe is SGD")
        if self.batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {self.batch_norm!r}")
        if self.batch_norm != "train" and self.mode != "full":
            raise ValueError(f"batch_norm={self.batch_norm!r} applies to full fine-tuning; a probe's backbone is always frozen")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.micro_batch_size < 0 or (self.micro_batch_size and self.batch_size % self.micro_batch_size):
            raise ValueError(f"micro_batch_size must be 0 (whole batches) or divide batch_size = {self.batch_size}, "
                             f"got {self.micro_batch_size}")
        if not self.end_learning_rate > 0:
            raise ValueError(f"end_learning_rate must be > 0, got {self.end_learning_rate}")


class TrainState(NamedTuple):
    """Everything a run carries from step to step (a pytree; checkpointed as is)."""

    step: jax.Array  # int32 scalar
    params: Any  # {"backbone": ..., "head": {"kernel": [D, C], "bias": [C]}}
    model_state: Any  # non-trainable collections of the backbone, e.g. {"batch_stats": ...}
    opt_state: Any


def split_variables(variables):
    """Backbone variables -> (trainable "params", other collections). A variables pytree that is
    not a dict with a "params" entry is taken as all-trainable."""
    if isinstance(variables, dict) and "params" in variables:
        rest = {k: v for k, v in variables.items() if k != "params"}
        return variables["params"], rest
    return variables, {}


def join_variables(params, model_state, like):
    if isinstance(like, dict) and "params" in like:
        return {"params": params, **model_state}
    return params


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum, coupled weight decay (PyTorch's `weight_decay`, added to the
    gradient before momentum) and a cosine schedule from `learning_rate` to `end_learning_rate`
    over `total_steps`; in probe mode the backbone is frozen by an optax mask.

    With `config.optimizer == "adamw"`: Adam (optax's defaults, b1 0.9, b2 0.999, eps 1e-8) with
    decoupled weight decay (each step subtracts lr * weight_decay * w) on the same schedule. Its
    per-parameter step size suits networks whose batch norm is folded into the weights (the
    TFLite mobile zoo): their layers' weight scales differ by orders of magnitude, and one SGD
    learning rate is either too small for some or destructive for others (docs/finetune.md).

    The learning rate, end learning rate and weight decay live in the optimiser *state*
    (`optax.inject_hyperparams`), not in the compiled program: every point of a sweep reuses
    one compiled train step, and each run's state carries its own values.
    """
    total = max(int(total_steps), 1)
    momentum = config.momentum or None
    nesterov = bool(config.nesterov and config.momentum > 0)
    mode = config.mode
    optimizer = config.optimizer

    def chain(learning_rate, end_learning_rate, weight_decay):
        end = jnp.minimum(end_learning_rate, learning_rate)

        def schedule(count):
            # optax.cosine_decay_schedule(lr, total, alpha=end / lr), written with traced lr/end.
            frac = jnp.minimum(count, total) / total
            return end + (learning_rate - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

        if optimizer == "adamw":
            sgd = optax.adamw(schedule, weight_decay=weight_decay)
        else:
            sgd = optax.chain(
                optax.add_decayed_weights(weight_decay),
                optax.sgd(schedule, momentum=momentum, nesterov=nesterov),
            )
        if mode == "full":
            return sgd
        labels = lambda params: {k: ("train" if k == "head" else "freeze") for k in params}  # noqa: E731
        return optax.multi_transform({"train": sgd, "freeze": optax.set_to_zero()}, labels)

    return optax.inject_hyperparams(chain)(
        learning_rate=config.learning_rate,
        end_learning_rate=config.end_learning_rate,
        weight_decay=config.weight_decay,
    )


def init_head(rng, feature_dim: int, num_classes: int):
    """PyTorch `nn.Linear`'s initialisation, U(-1/sqrt(D), 1/sqrt(D)) for kernel and bias."""
    bound = 1.0 / jnp.sqrt(jnp.float32(feature_dim))
    k1, k2 = jax.random.split(rng)
    return {
        "kernel": jax.random.uniform(k1, (feature_dim, num_classes), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(k2, (num_classes,), jnp.float32, -bound, bound),
    }


def init_state(variables, feature_dim: int, num_classes: int, tx, rng) -> TrainState:
    """Backbone variables + a new head -> the step-0 `TrainState`."""
    backbone_params, model_state = split_variables(variables)
    params = {"backbone": backbone_params, "head": init_head(rng, feature_dim, num_classes)}
    return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _forward(backbone: Backbone, like, params, model_state, x, *, train: bool, rng, dtype, probe: bool):
    """-> (logits float32 [B, C], mutated collections)."""
    bb_params, head = params["backbone"], params["head"]
    if dtype != jnp.float32:
        bb_params, x = _cast(bb_params, dtype), x.astype(dtype)
    variables = join_variables(bb_params, model_state, like)
    features, _, mutated = backbone.apply(variables, x, train=train and not probe, rng=rng)
    features = features.astype(jnp.float32)
    if probe:
        features = jax.lax.stop_gradient(features)
    logits = jnp.dot(features, head["kernel"], precision=jax.lax.Precision.HIGHEST) + head["bias"]
    return logits, mutated


def make_train_step(
    backbone: Backbone,
    like_variables,
    tx: optax.GradientTransformation,
    config: TrainConfig,
    num_classes: int,
    input_fn: Callable,
):
    """-> `step(state, images, labels, weights, rng) -> (state, metrics)`, pure (not yet jitted).

    images `[B, ...]` (what `input_fn(images, rng, train=True)` turns into model inputs), labels
    int `[B]`, weights float `[B]` (0 for padding rows: they add nothing to the loss or metrics).
    The loss is the weighted mean cross-entropy. `metrics`: "loss_sum", "count", "correct"
    (sums, so they add over steps).
    """
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    probe = config.mode == "probe"
    backbone_train = config.batch_norm == "train"  # "frozen": inference mode, statistics kept
    micro = config.micro_batch_size if 0 < config.micro_batch_size < config.batch_size else 0
    if micro and backbone_train and not probe and split_variables(like_variables)[1]:
        # Batch statistics of a micro-batch are not the batch's: the result would change.
        raise ValueError(f"micro_batch_size={micro} with batch_norm='train' on a backbone with batch statistics "
                         f"({sorted(split_variables(like_variables)[1])}) would normalise by micro-batch statistics; "
                         "use batch_norm='frozen' or whole batches")

    def grads_of(params, model_state, x, labels, weights, count, k_model):
        def loss_fn(params):
            logits, mutated = _forward(
                backbone, like_variables, params, model_state, x,
                train=backbone_train, rng=k_model, dtype=dtype, probe=probe,
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            # Divided by the whole batch's count, so micro-batches' losses and gradients add up.
            loss = jnp.sum(ce * weights) / jnp.maximum(count, 1.0)
            return loss, (logits, mutated)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def step(state: TrainState, images, labels, weights, rng):
        rng = jax.random.fold_in(rng, state.step)
        k_aug, k_model = jax.random.split(rng)
        x = input_fn(images, k_aug, train=True)
        weights = weights.astype(jnp.float32)
        count = jnp.sum(weights)
        if not micro:
            (loss, (logits, mutated)), grads = grads_of(state.params, state.model_state, x, labels, weights, count, k_model)
        else:
            n = labels.shape[0] // micro
            split = lambda a: a.reshape((n, micro) + a.shape[1:])  # noqa: E731

            def one(total, part):
                xb, yb, wb, i = part
                (lb, (logits_b, _)), gb = grads_of(state.params, state.model_state, xb, yb, wb, count,
                                                   jax.random.fold_in(k_model, i))
                return jax.tree.map(jnp.add, total, (lb, gb)), logits_b

            zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
            # Regular convolutions' gradients as matrix products inside the loop: XLA's CPU
            # backend runs the library's 10-40x slower there (backbones/conv_gradients.py).
            with conv_gradients.product_gradients():
                (loss, grads), logits = jax.lax.scan(one, zero, (split(x), split(labels), split(weights),
                                                                 jnp.arange(n)))
            logits, mutated = logits.reshape((-1,) + logits.shape[2:]), {}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model_state = state.model_state
        if not probe and mutated:
            model_state = {**model_state, **_cast_like(mutated, model_state)}
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
        metrics = {"loss_sum": loss * count, "count": count, "correct": correct}
        return TrainState(state.step + 1, params, model_state, opt_state), metrics

    return step


def _cast_like(new, old):
    # bf16 compute gives bf16 batch statistics; keep the stored collections in their own dtype.
    try:
        return jax.tree.map(lambda n, o: n.astype(o.dtype), new, {k: old[k] for k in new})
    except (KeyError, ValueError, TypeError):
        return new


def make_eval_step(backbone: Backbone, like_variables, config: TrainConfig, num_classes: int, input_fn: Callable):
    """-> `evaluate(state, images, labels, weights) -> {"loss_sum", "count", "confusion" [C, C]}`,
    pure; padded rows (weight 0) are exactly neutral, so each example counts once."""
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32

    def evaluate(state: TrainState, images, labels, weights):
        x = input_fn(images, None, train=False)
        logits, _ = _forward(
            backbone, like_variables, state.params, state.model_state, x,
            train=False, rng=None, dtype=dtype, probe=False,
        )
        weights = weights.astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {
            "loss_sum": jnp.sum(ce * weights),
            "count": jnp.sum(weights),
            "confusion": confusion_matrix(labels, jnp.argmax(logits, -1), weights, num_classes),
        }

    return evaluate


def make_feature_step(backbone: Backbone, like_variables, config: TrainConfig, input_fn: Callable):
    """-> `features(state, images) -> float32 [B, D]`, pure: the backbone's penultimate features
    of the evaluation view (no augmentation, inference mode), e.g. for the LP-FT starting head."""
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32

    def features(state: TrainState, images):
        x = input_fn(images, None, train=False)
        bb_params = state.params["backbone"]
        if dtype != jnp.float32:
            bb_params, x = _cast(bb_params, dtype), x.astype(dtype)
        out, _, _ = backbone.apply(join_variables(bb_params, state.model_state, like_variables), x, train=False, rng=None)
        return out.astype(jnp.float32)

    return features


def image_input_fn(preprocess, image_size: int, augment: bool, augment_config: AugmentConfig = AugmentConfig()):
    """uint8 `[B, R, R, 3]` -> normalised float32 model inputs: the paper's augmentation in
    training (when `augment`), a centre crop otherwise; channels-first if the preset says so."""
    from jscore.finetune.augment import augment_batch, eval_view

    mean = jnp.asarray(preprocess.mean, jnp.float32)
    std = jnp.asarray(preprocess.std, jnp.float32)

    def input_fn(images, rng, *, train: bool):
        if train and augment:
            x = augment_batch(images, rng, image_size, augment_config)
        else:
            x = eval_view(images, image_size)
        x = (x - mean) / std
        if preprocess.channels_first:
            x = jnp.transpose(x, (0, 3, 1, 2))
        return x

    return input_fn


def identity_input_fn(images, rng, *, train: bool):
    """Inputs already are model inputs (e.g. cached features for the linear-probe fast path)."""
    del rng, train
    return images.astype(jnp.float32)
