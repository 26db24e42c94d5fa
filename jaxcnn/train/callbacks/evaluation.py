"""A callback that reports a held-out curve: the metrics of extra data after every epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcnn import _validate
from jaxcnn.train.callbacks.base import Callback, Run


class EvaluateEach(Callback):
    """Evaluate ``model`` on ``(x, y)`` after every epoch and add ``{name}_loss`` (and accuracy) to the record.

    For *reporting* a curve (e.g. the test error of a lecture figure), never
    for choosing: :class:`EarlyStopping` refuses to monitor ``test_*`` metrics,
    and :func:`jaxcnn.train.fit` evaluates the test split itself once, after
    training. Put it before the loggers (``fit`` runs user callbacks first) so
    its numbers are logged.

    Args:
      model: the model being trained.
      x, y: ``(N, ...)`` inputs and labels.
      name: the prefix of the record keys.
      loss: the per-example loss (name or function).
      batch_size: evaluation batch size.
    """

    def __init__(
        self, model: Any, x: Any, y: Any, *, name: str = "test", loss: Any = "cross_entropy", batch_size: int = 500
    ):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a short identifier such as 'test', got {_validate.fmt(name)}")
        self.model, self.x, self.y, self.name = model, np.asarray(x), np.asarray(y), name
        self.loss, self.batch_size = loss, batch_size

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        from jaxcnn.train.evaluate import evaluate

        out = evaluate(self.model, run.state(), self.x, self.y, loss=self.loss, batch_size=self.batch_size)
        record[f"{self.name}_loss"] = out["loss"]
        record[f"{self.name}_accuracy"] = out.get("accuracy")
