"""Callbacks for :func:`jaxcnn.train.fit`: the protocol and the built-ins.

==========================  ======================================================
:class:`Callback`           the protocol (train / epoch / step begin and end hooks)
:class:`Run`                what a callback sees and may change (``run.stop(reason)``)
:class:`ProgressBar`        tqdm bar and a line per epoch
:class:`JsonlLogger`        ``metrics.jsonl`` (strict JSON; NaN as null)
:class:`CSVLogger`          one CSV row per epoch
:class:`TensorBoard`        event files through tensorboardX
:class:`CurvesPlot`         ``curves.png`` at the end
:class:`EvaluateEach`       a reported held-out curve (never used to choose)
:class:`EarlyStopping`      stop on a plateau of a val_* metric; keep the best state
:class:`ReduceLROnPlateau`  scale the learning rate of an ``inject_hyperparams`` optimizer
:class:`TerminateOnNaN`     the NaN guard (on by default)
:class:`ModelCheckpoint`    every k steps, at the end, and the best epoch
==========================  ======================================================
"""

from jaxcnn.train.callbacks.base import Callback, CallbackList, Run
from jaxcnn.train.callbacks.checkpoint import ModelCheckpoint
from jaxcnn.train.callbacks.control import EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, TrainingDiverged
from jaxcnn.train.callbacks.evaluation import EvaluateEach
from jaxcnn.train.callbacks.logging import (
    CSVLogger,
    CurvesPlot,
    JsonlLogger,
    MetricsLog,
    ProgressBar,
    TensorBoard,
    epoch_line,
    json_value,
)

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "CurvesPlot",
    "EarlyStopping",
    "EvaluateEach",
    "JsonlLogger",
    "MetricsLog",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "Run",
    "TensorBoard",
    "TerminateOnNaN",
    "TrainingDiverged",
    "epoch_line",
    "json_value",
]
