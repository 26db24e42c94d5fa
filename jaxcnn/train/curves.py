"""Training curves from a metrics log: :func:`plot_curves` and :func:`read_records` (one implementation,
in :mod:`jaxcnn._curves`, shared with :mod:`jaxcnn.analysis`)."""

from jaxcnn._curves import plot_curves, read_records

__all__ = ["plot_curves", "read_records"]
