"""Training: state, optimizers, losses, compiled steps (jit / pmap / sharded), the fit loop.

==========================  ==============================================================
:class:`TrainState`         params, batch_stats, opt_state, rng, step (one pytree)
:func:`create_train_state`  init a model and its optimizer state from a seed
:func:`make_optimizer`      optax optimizers by name, clipping, weight decay, freezing
:func:`make_schedule`       constant / cosine / warmup-cosine / step learning rates
:func:`cross_entropy`, ...  per-example losses and metrics over optax
:func:`make_train_step`     the compiled step for "jit", "sharded", "pmap" or "shard_map"
:func:`param_sharding`      model parallelism: large kernels split over a "model" mesh axis
:mod:`distributed`          several processes over ``jax.distributed`` (gloo on CPU)
:func:`make_eval_step`      weighted loss/accuracy sums under the same placements
:func:`fit`, :func:`evaluate`  epochs, validation, callbacks, the test set once at the end
:func:`predict`             outputs for every row under any strategy
:mod:`callbacks`            progress, logs (JSONL, CSV, TensorBoard), early stopping, NaN guard
:class:`Checkpointer`       orbax checkpoints: keep last k, never overwrite, clear errors
==========================  ==============================================================
"""

from jaxcnn.train import callbacks, distributed, partition
from jaxcnn.train.batches import process_batches
from jaxcnn.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    MetricsLog,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
    TrainingDiverged,
)
from jaxcnn.train.checkpoint import Checkpointer, CheckpointError
from jaxcnn.train.compile import CompiledStep
from jaxcnn.train.curves import plot_curves, read_records
from jaxcnn.train.evaluate import evaluate, predict
from jaxcnn.train.fit import FitResult, fit
from jaxcnn.train.freeze import freeze_optimizer
from jaxcnn.train.losses import accuracy, cross_entropy, get_loss, mse, top_k_accuracy
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.partition import make_mesh, param_sharding
from jaxcnn.train.placement import PER_DEVICE, STRATEGIES, Placement, default_strategy
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.step import eval_step_body, make_eval_step, make_train_step, train_step_body

__all__ = [
    "PER_DEVICE",
    "STRATEGIES",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "Checkpointer",
    "CompiledStep",
    "EarlyStopping",
    "FitResult",
    "MetricsLog",
    "ModelCheckpoint",
    "Placement",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
    "TrainState",
    "TrainingDiverged",
    "accuracy",
    "callbacks",
    "create_train_state",
    "cross_entropy",
    "default_strategy",
    "distributed",
    "eval_step_body",
    "evaluate",
    "fit",
    "freeze_optimizer",
    "get_loss",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "mse",
    "param_sharding",
    "partition",
    "plot_curves",
    "predict",
    "process_batches",
    "read_records",
    "top_k_accuracy",
    "train_step_body",
]
