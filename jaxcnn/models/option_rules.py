"""The rules ``get_model`` checks every option against, before a model is built.

Options are the model dataclass's fields; the rule comes from the field's
declared type (``int`` -> an int >= 1, ``bool`` -> a bool, ``Sequence[int]`` ->
ints >= 1, ...) with a few options that need their own (a drop probability, the
choices of a string option, VGG's ``config``). So ``num_classes=0`` is a
``ValueError`` naming the model and the option when ``get_model`` is called,
not a ``ZeroDivisionError`` inside an initializer at ``init``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxcnn import _validate
from jaxcnn.models._blocks import positive_int, positive_ints

#: string options and the values they accept
CHOICES: dict[str, tuple[str, ...]] = {
    "block": ("basic", "bottleneck"),
    "stem": ("imagenet", "cifar"),
    "mode": ("regression", "classification"),
    "pool": ("max", "avg"),
}


def _ints_or_empty(value: Any, name: str) -> None:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 0:
        return
    positive_ints(value, name)


def _config(value: Any, name: str) -> None:
    """VGG's layer list: filter counts >= 1 and "M" (a max pool)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise TypeError(f"{name} must be a non-empty sequence of ints >= 1 and 'M', got {_validate.fmt(value)}")
    for i, item in enumerate(value):
        if item != "M":
            positive_int(item, f"{name}[{i}]")


def _dtype(value: Any, name: str) -> None:
    if value is not None:  # None: the default compute dtype
        _validate.floating_dtype(value, name)


def _callable(value: Any, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a function (e.g. jax.nn.relu), got {_validate.fmt(value)}")


def _rule(option: str, declared: str) -> Callable[[Any, str], Any] | None:
    """The check for one option of declared type ``declared`` (``None``: accepted as is)."""
    if option == "dropout_rate":
        return lambda v, n: _validate.check_number(v, n, low=0.0, high=1.0, high_open=True)
    if option == "widths":
        return _ints_or_empty
    if option == "config":
        return _config
    if option == "dtype":
        return _dtype
    if option in CHOICES:
        return lambda v, n: _validate.check_choice(v, n, CHOICES[option])
    return {
        "int": positive_int,
        "float": lambda v, n: _validate.check_number(v, n, low=0.0, low_open=True),
        "bool": _validate.check_bool,
        "Sequence[int]": positive_ints,
        "Callable[[Any], Any]": _callable,
    }.get(declared)


def check_options(model_name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Check the options given to ``get_model(model_name, **kwargs)`` against their rules.

    Args:
      model_name: the registry name (for the message).
      cls: the model class (its dataclass fields declare the option types).
      kwargs: the options given (the variant's own defaults are trusted).

    Raises:
      TypeError, ValueError: an option of the wrong kind or value; the message
        starts ``get_model('<name>') option <option> must be ...``.
    """
    declared = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for option, value in kwargs.items():
        rule = _rule(option, declared.get(option, "Any"))
        if rule is not None:
            rule(value, f"get_model({model_name!r}) option {option}")
