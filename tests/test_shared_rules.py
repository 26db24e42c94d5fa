"""Rules written once in jaxcnn._validate (error values, int minimums), checked through their callers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn import _validate
from jaxcnn.data.batching import num_batches


@pytest.mark.parametrize(
    "value,expected",
    [
        (np.int32, "<class 'numpy.int32'>"),  # a class has `shape`/`dtype` attributes but is no array
        (np.ones((2, 3), np.float32), "an array of shape (2, 3) and dtype float32"),
        (np.float32(2.5), "np.float32(2.5)"),
        ("x" * 100, "'" + "x" * 76 + "..."),
    ],
)
def test_fmt_shows_a_short_repr_and_arrays_by_shape_and_dtype(value, expected):
    assert _validate.fmt(value) == expected


def test_a_dtype_class_passed_for_a_flag_is_named_in_the_error():
    with pytest.raises(TypeError, match=r"^ceil_mode must be True or False, got <class 'numpy.bool"):
        F.max_pool(jnp.ones((1, 4, 4, 1)), 2, ceil_mode=np.bool_)


@pytest.mark.parametrize(
    "args,error,message",
    [
        ((-1, 4), ValueError, r"^n must be >= 0, got -1$"),
        ((10, 0), ValueError, r"^batch_size must be >= 1, got 0"),
        ((10.0, 4), TypeError, r"^n must be an int, got 10\.0"),
        ((10, True), TypeError, r"^batch_size must be an int"),
    ],
)
def test_num_batches_rejects_bad_counts(args, error, message):
    with pytest.raises(error, match=message):
        num_batches(*args)


@pytest.mark.parametrize(
    "n,batch,drop,expected", [(10, 4, True, 2), (10, 4, False, 3), (0, 3, False, 0), (8, 4, True, 2)]
)
def test_num_batches_counts_as_floor_or_ceil(n, batch, drop, expected):
    assert num_batches(n, batch, drop) == expected


@pytest.mark.parametrize(
    "layer,error,message",
    [
        (jnn.Conv(0, 3), ValueError, r"^Conv: features must be >= 1, got 0"),
        (jnn.Conv(4, 3, groups=0), ValueError, r"^Conv: groups must be >= 1, got 0"),
        (jnn.Conv(4.0, 3), TypeError, r"^Conv: features must be an int, got 4\.0"),
        (jnn.ConvTranspose(-2, 3), ValueError, r"^ConvTranspose: features must be >= 1, got -2"),
        (
            jnn.Conv(4, 3, groups=3),
            ValueError,
            r"groups=3 must divide both the input channels \(2\) and features \(4\)",
        ),
    ],
)
def test_conv_layers_name_themselves_in_channel_errors(layer, error, message):
    with pytest.raises(error, match=message):
        layer.init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))
