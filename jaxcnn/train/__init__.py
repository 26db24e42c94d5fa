"""Training: state, optimizers, losses, compiled steps (jit / pmap / sharded)."""

from jaxcnn.train.checkpoint import Checkpointer, CheckpointError
from jaxcnn.train.curves import plot_curves, read_records
from jaxcnn.train.fit import FitResult, MetricsLog, evaluate, fit
from jaxcnn.train.losses import accuracy, cross_entropy, get_loss, mse, top_k_accuracy
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.step import (
    STRATEGIES,
    CompiledStep,
    Placement,
    default_strategy,
    eval_step_body,
    make_eval_step,
    make_train_step,
    train_step_body,
)
