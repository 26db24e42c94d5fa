"""The train and eval step bodies, and the two functions that compile them.

A batch is a dict ``{"x": (B, ...), "y": (B, ...), "weight": (B,) optional}``.
The loss is the weighted mean ``sum_i w_i l_i / sum_i w_i`` over the *global*
batch (weights default to 1; a padded example has weight 0), so every strategy
and any split of the batch optimize the same number. When a batch carries
``"weight"``, every BatchNorm layer computes its training statistics over the
rows with ``weight > 0`` only (:mod:`jaxcnn.train.hooks`), so a padded batch
trains exactly as its real rows alone.

Where each piece lives: the placements in :mod:`jaxcnn.train.placement`,
compilation and caching in :mod:`jaxcnn.train.compile`, the batch split and
gradient accumulation in :mod:`jaxcnn.train.split`, what is injected into the
model's layers in :mod:`jaxcnn.train.hooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate
from jaxcnn.train import freeze, model_api, split
from jaxcnn.train.compile import DEFAULT_UNROLL, CompiledStep
from jaxcnn.train.hooks import layer_hooks
from jaxcnn.train.losses import LossFn, accuracy, get_loss
from jaxcnn.train.partition import DEFAULT_MIN_SIZE
from jaxcnn.train.placement import Batch, resolve_placement
from jaxcnn.train.state import TrainState


def _psum(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else lax.psum(x, axis_name)


def example_weights(batch: Batch) -> jnp.ndarray:
    """``batch["weight"]`` as float32, or ones: ``(B,)``."""
    w = batch.get("weight")
    return jnp.ones((batch["x"].shape[0],), jnp.float32) if w is None else w.astype(jnp.float32)


def weighted_sums(outputs: Any, y: Any, per_example_loss: Any, w: Any, axis_name: str | None) -> dict[str, Any]:
    """Global weighted sums: ``count = sum w``, ``loss = sum w l`` and, for integer labels, ``accuracy``."""
    sums = {"count": _psum(jnp.sum(w), axis_name), "loss": _psum(jnp.sum(w * per_example_loss), axis_name)}
    if jnp.issubdtype(y.dtype, jnp.integer) and outputs.ndim == y.ndim + 1:
        sums["accuracy"] = _psum(jnp.sum(w * accuracy(outputs, y)), axis_name)
    return sums


def finite_leaves(tree: Any) -> jnp.ndarray:
    """``(n_leaves,)`` bool: whether every entry of each leaf is finite (the NaN guard's probe).

    Computed as ``isfinite(sum(leaf * 0))``: ``0 * v`` is ``0`` for finite ``v``
    and NaN for ``inf`` or NaN, and a sum of zeros is exactly ``0``, so this is
    ``all(isfinite(leaf))`` as one float sum, measured no slower on CPU than a
    boolean ``all`` reduction (``benchmarks/results/cpu-rules.md``, "guard").
    """
    leaves = jax.tree.leaves(tree)
    return jnp.stack([jnp.isfinite(jnp.sum(leaf * 0)) for leaf in leaves]) if leaves else jnp.ones((0,), bool)


def train_step_body(
    model: Any,
    loss_fn: LossFn,
    augment: Callable | None = None,
    batch_split: int | str = 1,
    grad_accum: int = 1,
    frozen: frozenset = frozenset(),
    guard: bool = True,
    axis_name: str | None = None,
) -> Callable:
    """The pure single-step function ``(state, batch) -> (state, metrics)``.

    ``grad = d/dparams [sum_i w_i l_i(params) / sum_i w_i]`` over the global
    batch (with ``axis_name``: each device's part, then ``psum``); one
    optimizer update; the ``batch_stats`` collection replaced by the model's
    update, except the statistics of ``frozen`` layers (paths of frozen
    parameters, :mod:`jaxcnn.train.freeze`), which are kept.

    Args:
      model: a linen module (see :mod:`jaxcnn.train.model_api`).
      loss_fn: per-example loss ``(outputs, targets) -> (B,)``.
      augment: ``augment(key, x) -> x`` applied first, with ``fold_in(step_key,
        1)`` (per-device strategies: also folded with the device index).
      batch_split: parts of the (per-device) batch whose gradients are traced
        side by side, or "auto" (:mod:`jaxcnn.train.split`).
      grad_accum: micro-batches run one after another, their gradients summed.
      frozen: the frozen parameter paths whose layers keep their statistics.
      guard: also report the NaN guard's probes (below).
      axis_name: the device axis of "pmap"/"shard_map", else ``None``.

    Returns:
      ``body(state, batch) -> (state, metrics)``; metrics are ``loss`` and
      ``accuracy`` (global weighted means) and, with ``guard``, one finiteness
      probe, one bool per parameter leaf in ``jax.tree.leaves`` order, and
      ``labels_ok`` (integer labels: every weighted label is a class index in
      ``[0, C)``; a label outside gives a meaningless loss, not an error).
      The probe is ``finite`` (this step's gradients are finite) when the
      batch is not split, and ``params_finite`` (the parameters this step
      *starts from* are finite, so step ``t``'s non-finite update shows in step
      ``t + 1``'s metrics) when it is.

    Why two probes: on XLA:CPU a probe of anything a split step computes late
    (its gradients, its updated parameters) costs it far more than its own
    work, because it reorders how the parts run, and a probe of its input does
    not; an unsplit step pays each probe's own work, least for the gradients'
    (``benchmarks/results/cpu-rules.md``, "guard").
    :class:`jaxcnn.train.callbacks.TerminateOnNaN` reads either.
    """

    def body(state: TrainState, batch: Batch):
        x, y = batch["x"], batch["y"]
        if axis_name is not None:
            model_api.check_axis_name(model, axis_name)
        if augment is not None:
            key = jax.random.fold_in(state.step_key(), 1)
            if axis_name is not None:
                key = jax.random.fold_in(key, lax.axis_index(axis_name))
            x = augment(key, x)
        w = example_weights(batch)
        count = jnp.maximum(_psum(jnp.sum(w), axis_name), 1e-12)
        mutable = ["batch_stats"] if state.batch_stats else False
        rngs = {"dropout": state.step_key()}
        padded = "weight" in batch

        def loss_of(params, batch_stats, part):
            variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
            mask = part["w"] > 0 if padded else None
            with layer_hooks(axis_name, mask):
                out = model_api.apply(model, variables, part["x"], train=True, rngs=rngs, mutable=mutable, mask=mask)
            outputs, updates = out if mutable else (out, {})
            per_example = loss_fn(outputs, part["y"])
            new_stats = updates.get("batch_stats", batch_stats)
            return jnp.sum(part["w"] * per_example) / count, (outputs, per_example, new_stats)

        grad_fn, parts = jax.grad(loss_of, has_aux=True), 1
        if grad_accum > 1:
            grad_fn = split.accumulate_grad(grad_fn, grad_accum, axis_name)
        else:
            whole = lambda: model_api.apply(model, state.variables(), x, train=True, rngs=rngs, mutable=mutable)
            parts = split.resolve_parts(batch_split, x.shape[0], whole, model_api.mixing_layers(model))
            grad_fn = split.split_grad(grad_fn, parts, axis_name)
        grads, (outputs, per_example, batch_stats) = grad_fn(state.params, state.batch_stats, {"x": x, "y": y, "w": w})
        grads = _psum(grads, axis_name)
        stats = freeze.frozen_stat_paths(frozen, state.params, state.batch_stats)
        batch_stats = freeze.keep_frozen_stats(stats, state.batch_stats, batch_stats)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        sums = weighted_sums(outputs, y, per_example, w, axis_name)
        metrics = {k: v / count for k, v in sums.items() if k != "count"}
        if guard:  # a split step probes its input, any other its gradients (see above)
            if parts > 1:
                metrics["params_finite"] = finite_leaves(state.params)
            else:
                metrics["finite"] = finite_leaves(grads)
            if jnp.issubdtype(y.dtype, jnp.integer) and outputs.ndim == y.ndim + 1:
                bad = jnp.sum((w > 0) & ((y < 0) | (y >= outputs.shape[-1])))
                metrics["labels_ok"] = _psum(bad, axis_name) == 0
        return new_state, metrics

    return body


def eval_step_body(model: Any, loss_fn: LossFn, axis_name: str | None = None) -> Callable:
    """``(state or variables, batch) -> sums``: weighted sums of loss and accuracy and the weight total.

    Sums (not means) so that :func:`jaxcnn.train.evaluate` can add batches of any
    size, padded ones included, and divide once at the end.
    """

    def body(state: TrainState | dict, batch: Batch):
        variables = state.variables() if isinstance(state, TrainState) else state
        outputs = model_api.apply(model, variables, batch["x"], train=False)
        return weighted_sums(outputs, batch["y"], loss_fn(outputs, batch["y"]), example_weights(batch), axis_name)

    return body


def predict_step_body(model: Any, axis_name: str | None = None) -> Callable:
    """``(variables, batch) -> outputs``: the model in inference mode on ``batch["x"]``."""

    def body(variables: dict, batch: Batch):
        return model_api.apply(model, variables, batch["x"], train=False)

    return body


def make_train_step(
    model: Any,
    loss_fn: str | LossFn = "cross_entropy",
    strategy: str | None = "jit",
    *,
    steps_per_call: int = 1,
    devices: Any = None,
    donate: bool = True,
    unroll: bool | int = DEFAULT_UNROLL,
    augment: Callable | None = None,
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
    batch_split: int | str = "auto",
    grad_accum: int = 1,
    trainable: Any = None,
    update_frozen_stats: bool = False,
    guard: bool = True,
) -> CompiledStep:
    """Compile a training step for one device, data-parallel pmap/shard_map, or a sharded mesh.

    ============ ==================================================================
    "jit"        one device: ``jax.jit(step)``.
    "sharded"    ``jax.jit`` over a ``Mesh`` of all devices: the batch split along
                 "data" (``NamedSharding``), state replicated; XLA inserts the
                 collectives, so it equals "jit" on the same global batch. With
                 ``model_parallel=k`` large kernels are split over "model".
    "pmap"       ``jax.pmap`` with ``axis_name="data"``: gradients and metrics
                 summed with ``lax.psum``; BatchNorm/Dropout built with the same
                 ``axis_name`` use global statistics and masks.
    "shard_map"  ``jax.jit(jax.shard_map(step))``: the per-device program of
                 "pmap" with jit's placement (global ``jax.Array`` in and out).
    ============ ==================================================================

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=True,
        rngs={"dropout": key}, mutable=["batch_stats"])`` (``train`` only if
        its ``__call__`` takes it). With "pmap"/"shard_map" its BatchNorm and
        Dropout layers must be built with ``axis_name="data"`` (checked).
      loss_fn: a per-example loss ``(outputs, targets) -> (B,)`` or its name.
      strategy: one of the above, or ``None`` for "sharded" on several devices.
      steps_per_call: run k steps in one dispatch; batches are ``(k, B, ...)``
        and metrics ``(k,)``; equal to k single steps.
      devices: the devices to use (default: all).
      donate: donate the input state's buffers (use the returned state).
      unroll: for ``steps_per_call > 1``, the ``lax.scan`` unroll factor: ``1``
        or ``False`` (default) a loop of one step, which compiles like one
        step; ``True`` all ``k`` steps inlined (k times the compile and the
        scratch memory; a little faster for the BatchNorm zoo models on CPU,
        cpu-rules.md, "loops");
        ``n`` a loop of ``n`` steps per iteration.
      augment: ``augment(key, x) -> x``, pure JAX, applied inside the step.
      model_parallel, min_shard_size: split kernels of at least
        ``min_shard_size`` elements over a "model" mesh axis of this size.
      batch_split: each step's gradient as the sum over ``k`` parts traced side
        by side (:mod:`jaxcnn.train.split`); "auto" (default) splits on a CPU
        device under "jit" for models whose layers do not mix examples.
      grad_accum: ``k`` micro-batches per step, one after another: the update of
        one batch ``k`` times the micro-batch, in the memory of one micro-batch
        (BatchNorm: statistics per micro-batch, as a PyTorch accumulation loop).
      trainable: the mask the optimizer freezes with (pytree of bools like the
        params, :func:`jaxcnn.models.freeze_mask`); frozen layers keep their
        BatchNorm statistics unless ``update_frozen_stats``. The optimizer
        itself must freeze them too (:func:`jaxcnn.train.make_optimizer`'s
        ``trainable``; :func:`jaxcnn.train.fit` does both).
      update_frozen_stats: let frozen layers' BatchNorm statistics update.
      guard: report, per step, whether its gradients (a split step: the
        parameters it starts from) are finite, leaf by leaf, and every label a
        class index (:func:`train_step_body`; what
        :class:`~jaxcnn.train.callbacks.TerminateOnNaN` reads); the cost is
        measured in ``benchmarks/results/``.

    Returns:
      A :class:`CompiledStep`: ``state, metrics = step(state, batch)`` on
      *placed* values (``step.place_state``, ``step.place_batch``;
      ``step.fetch_state``/``fetch_metrics`` bring them back).
    """
    placement = resolve_placement(strategy, devices, steps_per_call, model_parallel, min_shard_size)
    batch_split = split.check_batch_split(batch_split)
    grad_accum = split.check_grad_accum(grad_accum)
    if batch_split == "auto" and (
        grad_accum > 1 or not (placement.strategy == "jit" and placement.devices[0].platform == "cpu")
    ):
        batch_split = 1
    if grad_accum > 1 and batch_split != 1:
        raise ValueError(f"grad_accum={grad_accum} and batch_split={batch_split} cannot be combined; use one")
    model = model_api.check_model(model)
    if grad_accum > 1 and model_api.mixing_layers(model):
        raise ValueError(
            f"grad_accum={grad_accum} is not supported for this NNX model: layers "
            f"{model_api.mixing_layers(model)} cannot be given each micro-batch's rows; use grad_accum=1"
        )
    frozen = frozenset() if trainable is None or update_frozen_stats else freeze.frozen_param_paths(trainable)
    body_key = (
        train_step_body,
        model,
        get_loss(loss_fn),
        augment,
        batch_split,
        grad_accum,
        frozen,
        _validate.check_bool(guard, "guard"),
    )
    return CompiledStep(body_key, placement, donate=donate, unroll=unroll)


def make_eval_step(
    model: Any,
    loss_fn: str | LossFn = "cross_entropy",
    strategy: str | None = "jit",
    *,
    devices: Any = None,
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
    predict: bool = False,
) -> CompiledStep:
    """Compile an evaluation step returning weighted sums (:func:`eval_step_body`), or outputs with ``predict``.

    ``strategy``, ``devices``, ``model_parallel`` and ``min_shard_size`` as for
    :func:`make_train_step`.
    """
    placement = resolve_placement(strategy, devices, 1, model_parallel, min_shard_size)
    model = model_api.check_model(model)
    key = (predict_step_body, model) if predict else (eval_step_body, model, get_loss(loss_fn))
    return CompiledStep(key, placement, donate=False, per_example=predict)
