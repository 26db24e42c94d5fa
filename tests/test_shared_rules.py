"""Rules written once in jaxcnn._validate, checked through every caller that used to spell them out itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.data as D
import jaxcnn.nn as jnn
from jaxcnn import _validate
from jaxcnn.data.batching import num_batches
from jaxcnn.models import get_model


@pytest.mark.parametrize(
    "value,expected",
    [(jnp.float32, np.float32), ("bfloat16", jnp.bfloat16), (np.float16, np.float16), ("float64", np.float64)],
)
def test_floating_dtype_accepts_floating_dtypes(value, expected):
    assert _validate.floating_dtype(value, "dtype") == np.dtype(expected)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: _validate.floating_dtype(np.int32, "dtype"),
            r"dtype must be a floating dtype .*got <class 'numpy.int32'>",
        ),
        (lambda: _validate.floating_dtype("floaty", "dtype"), r"dtype must be a floating dtype .*got 'floaty'"),
        (lambda: _validate.floating_dtype(3, "param_dtype"), r"param_dtype must be a floating dtype .*got 3"),
        (lambda: D.synthetic((4,), dtype=np.int32), r"dtype must be a floating dtype"),
        (lambda: D.synthetic((4,), dtype="nonsense"), r"dtype must be a floating dtype .*'nonsense'"),
        (lambda: get_model("lwls_cnn", dtype="int8"), r"dtype must be a floating dtype .*'int8'"),
    ],
)
def test_a_dtype_that_is_not_floating_is_a_type_error_naming_the_argument(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_models_and_synthetic_data_take_a_floating_dtype_or_none():
    assert get_model("lwls_cnn", dtype="bfloat16").dtype == "bfloat16"
    assert get_model("lwls_cnn", dtype=None).dtype is None
    assert D.synthetic((4,), num_train=4, num_test=2, dtype="float16").x_train.dtype == np.float16


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
