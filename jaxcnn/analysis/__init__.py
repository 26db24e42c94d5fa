"""Look inside a CNN: parameter/MAC summary, receptive fields, conv as a matrix, plots.

Every tool reads what the model actually computes — module calls through
``flax.linen.intercept_methods``, operations from the traced jaxpr — so it works
on any ``flax.linen.Module`` (and the receptive field on any function of ``x``),
not only on the modules of :mod:`jaxcnn.nn`.

==============================  ==================================================
:func:`summary`                 per-layer output shape, parameters, MACs, totals
:func:`receptive_field`         analytic field per layer and the measured one
:func:`check_receptive_field`   the two must agree, or ``ValueError``
:func:`chain_receptive_field`   the recurrences over a chain given on paper
:func:`conv_matrix`             the Toeplitz matrix ``M`` with ``conv(x) = M x``
:func:`conv_matrix_stats`       sparsity and weight sharing of ``M``
:func:`conv_singular_values`    all singular values (circular, DFT) or the top ones
:func:`effective_receptive_field`  Luo et al.'s gradient-map ERF and its radius
:func:`erf_from_map`            the ERF statistics of a given (averaged) map
:func:`erf_gradient_map`        the (jit-able) mean |input gradient| of a centre unit
:func:`plot_erf`                ERF maps side by side with the theoretical field
:func:`plot_filters`            first-layer kernels as image tiles
:func:`plot_feature_maps`       a named layer's feature maps for one input
:func:`plot_curves`             training curves from a ``metrics.jsonl`` log
==============================  ==================================================
"""

from jaxcnn.analysis.conv_matrix import ConvMatrixStats, conv_matrix, conv_matrix_stats
from jaxcnn.analysis.erf import (
    EffectiveReceptiveField,
    effective_receptive_field,
    erf_from_map,
    erf_gradient_map,
    plot_erf,
)
from jaxcnn.analysis.field_chain import FieldLayer, LayerSpec, chain_receptive_field
from jaxcnn.analysis.field_measure import positive_params
from jaxcnn.analysis.plots import plot_curves, plot_feature_maps, plot_filters
from jaxcnn.analysis.receptive_field import ReceptiveField, check_receptive_field, receptive_field
from jaxcnn.analysis.spectral import conv_singular_values
from jaxcnn.analysis.summary import LayerRow, Summary, eqn_macs, summary

__all__ = [
    "ConvMatrixStats",
    "EffectiveReceptiveField",
    "FieldLayer",
    "LayerRow",
    "LayerSpec",
    "ReceptiveField",
    "Summary",
    "chain_receptive_field",
    "check_receptive_field",
    "conv_matrix",
    "conv_matrix_stats",
    "conv_singular_values",
    "effective_receptive_field",
    "erf_from_map",
    "erf_gradient_map",
    "eqn_macs",
    "plot_curves",
    "plot_erf",
    "plot_feature_maps",
    "plot_filters",
    "positive_params",
    "receptive_field",
    "summary",
]
