"""Figure helpers shared by every layer that draws (train's curves, analysis's plots).

Figures are ``matplotlib.figure.Figure`` objects built directly, never through
``pyplot``: no display, no backend choice, no global list of open figures.
"""

from __future__ import annotations

import math
import os
from typing import Any

from matplotlib.figure import Figure

from jaxcnn import _validate


def save(fig: Figure, path: Any, dpi: int) -> None:
    """Write ``fig`` as a PNG to ``path`` (creating its folder); nothing if ``path`` is None."""
    if path is not None:
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")


def grid(n: int, ncols: int | None) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` panels: ``ncols`` columns, or about square when ``None``."""
    ncols = max(1, math.ceil(math.sqrt(n))) if ncols is None else _validate.as_int(ncols, "ncols")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols
