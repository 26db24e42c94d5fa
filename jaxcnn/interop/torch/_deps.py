"""PyTorch is optional: import it only when a function needs it, with an error that says how to get it."""

from __future__ import annotations

from typing import Any

import numpy as np

INSTALL_HINT = "pip install jaxcnn[torch]"


class TorchNotInstalledError(ImportError):
    """PyTorch (or safetensors) is needed by the function called and is not installed."""


def require_torch(what: str) -> Any:
    """``import torch``, or :class:`TorchNotInstalledError` naming ``what`` needs it and the extra to install."""
    try:
        import torch
    except ImportError as e:
        raise TorchNotInstalledError(f"{what} needs PyTorch, which is not installed: {INSTALL_HINT}") from e
    return torch


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, bfloat16 included) or array-like as a NumPy array (a copy for tensors)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy().copy()
    return np.asarray(value)
