"""Checkpoint files from a local path: ``.pt`` / ``.pth`` (PyTorch) and ``.safetensors`` (no PyTorch needed).

:func:`load_variables` is the one call behind ``jaxcnn train --init-from FILE``
and ``jaxcnn eval --weights FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxcnn import _validate
from jaxcnn.interop.torch._deps import INSTALL_HINT, require_torch, to_numpy
from jaxcnn.interop.torch.convert import from_torch

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, of an unknown kind, corrupt, or not a state_dict."""


def _path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {_validate.fmt(path)}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint path {path!r} is not a file")
    return path


def _unwrap(obj: Any, path: str) -> dict[str, Any]:
    """A state_dict from what ``torch.load`` returned: the dict itself, or its ``"state_dict"`` / ``"model"`` entry."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        bad = [k for k, v in obj.items() if not (isinstance(k, str) and hasattr(v, "shape"))]
        if not bad:
            return {k: to_numpy(v) for k, v in obj.items()}
        raise CheckpointError(f"{path!r} holds a dict, but not of name -> tensor: e.g. entry {bad[0]!r}")
    raise CheckpointError(f"{path!r} holds {type(obj).__name__}, not a state_dict (a dict of name -> tensor)")


def load_state_dict(path: Any) -> dict[str, np.ndarray]:
    """Read a state_dict from a local ``.pt`` / ``.pth`` / ``.bin`` or ``.safetensors`` file as NumPy arrays.

    ``.pt`` files are read with ``torch.load(path, map_location="cpu",
    weights_only=True)`` (no code in the file is run; needs PyTorch); a
    checkpoint dict with a ``"state_dict"``/``"model_state_dict"``/``"model"``
    entry is unwrapped. ``.safetensors`` files are read with
    ``safetensors.numpy`` (no PyTorch needed).

    Args:
      path: the file.

    Returns:
      ``{key: np.ndarray}`` (in the file's order; safetensors files store keys sorted).

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: an unknown suffix, a corrupt file, or not a state_dict.
      TorchNotInstalledError: a ``.pt`` file without PyTorch installed.

    Example:
      >>> sd = load_state_dict("resnet18.safetensors")  # doctest: +SKIP
    """
    path = _path(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(f"reading {path!r} needs the safetensors package: {INSTALL_HINT}") from e
        try:
            return dict(load_file(path))
        except Exception as e:  # safetensors raises its own SafetensorError for any bad header or data
            raise CheckpointError(f"{path!r} is not a readable safetensors file: {e}") from e
    if suffix in TORCH_SUFFIXES:
        torch = require_torch(f"reading {path!r}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip and weights_only errors all mean: not a loadable state_dict
            raise CheckpointError(f"{path!r} is not a readable PyTorch checkpoint: {type(e).__name__}: {e}") from e
        return _unwrap(obj, path)
    raise CheckpointError(
        f"checkpoint {path!r} has suffix {suffix!r}; expected one of {', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}"
    )


def save_state_dict(state_dict: Mapping[str, Any], path: Any) -> None:
    """Write ``{key: tensor or array}`` to ``.safetensors`` (no PyTorch needed) or ``.pt`` / ``.pth`` (``torch.save``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {_validate.fmt(path)}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    arrays = {k: np.ascontiguousarray(to_numpy(v)) for k, v in state_dict.items()}
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import save_file

        save_file(arrays, path)
    elif suffix in TORCH_SUFFIXES:
        torch = require_torch(f"writing {path!r}")
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, path)
    else:
        raise CheckpointError(f"path {path!r} must end in one of {', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}")


def load_weights(path: Any, name_or_model: Any, **kwargs: Any) -> Any:
    """:func:`load_state_dict` then :func:`jaxcnn.interop.torch.from_torch` (``kwargs`` go to it)."""
    return from_torch(name_or_model, load_state_dict(path), **kwargs)


def load_variables(
    path: Any,
    model_name: Any,
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    strict: bool = True,
    variables: Any = None,
) -> Any:
    """The variables of ``get_model(model_name, **model_kwargs)`` from a PyTorch checkpoint file, in one call.

    For the command line: ``jaxcnn train --init-from FILE`` and ``jaxcnn eval
    --weights FILE``. Strict by default: any missing, unexpected or
    mis-shaped key is an error listing them all. With ``strict=False``,
    returns ``(variables, IncompatibleKeys)``: for fine-tuning with a new head,
    pass ``model_kwargs={"num_classes": 10}``, ``strict=False`` and
    ``variables=model.init(...)``, whose head (reported as mismatched) is kept.

    Args:
      path: ``.pt`` / ``.pth`` / ``.safetensors`` file with torchvision key names.
      model_name: a zoo name, e.g. ``"resnet18"`` (or a Flax module).
      model_kwargs: the options the model is built with.
      strict: as :func:`jaxcnn.interop.torch.from_torch`.
      variables: starting variables for what a non-strict load leaves out.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` for ``model.apply``.

    Example:
      >>> variables = load_variables("resnet18.pth", "resnet18", {"num_classes": 1000})  # doctest: +SKIP
    """
    return load_weights(path, model_name, model_kwargs=model_kwargs, strict=strict, variables=variables)
