"""Bad input raises ValueError/TypeError naming the argument and the value, at trace time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.functional as F
from jaxcnn import _validate

X = jnp.zeros((2, 8, 8, 4))
W = jnp.zeros((3, 3, 4, 6))
KEY = jax.random.key(0)

# (call, exception, pattern the message must contain)
CASES = [
    # padding
    (lambda: F.conv(X, W, padding="same-ish"), ValueError, r"padding must be one of 'VALID'.*'same-ish'"),
    (lambda: F.conv(X, W, padding=1.5), TypeError, r"padding must be .*1\.5"),
    (
        lambda: F.conv(X, W, padding=((1, 1),)),
        ValueError,
        r"padding must have one \(low, high\) pair per spatial dim \(2\), got 1",
    ),
    (lambda: F.conv(X, W, padding=((1, 1), (1, 2, 3))), ValueError, r"padding\[1\] must be a \(low, high\) pair"),
    (lambda: F.conv(X, W, padding=(1, 1, 1)), ValueError, r"padding must be an int or a sequence of 2 ints.*3 entries"),
    (lambda: F.conv(X, W, padding=-1), ValueError, r"padding must be non-negative, got -1"),
    (lambda: F.conv(X, W, padding=None), TypeError, r"padding must be"),
    (lambda: F.max_pool(X, 2, padding="bogus"), ValueError, r"padding must be one of .*'bogus'"),
    # rank and channels
    (lambda: F.conv(jnp.zeros((8, 8)), W), ValueError, r"x must have shape \(N, \*spatial, C\).*rank 2"),
    (lambda: F.conv(jnp.zeros((1, 2, 2, 2, 2, 2, 4)), W), ValueError, r"x must have shape.*rank 7"),
    (
        lambda: F.conv(X, jnp.zeros((3, 4, 6))),
        ValueError,
        r"kernel must have shape \(\*window, C_in // groups, C_out\)",
    ),
    (lambda: F.conv(X, jnp.zeros((3, 3, 5, 6))), ValueError, r"C_in = 5.*C_in = 4"),
    (
        lambda: F.conv(X, jnp.zeros((3, 3, 2, 6)), groups=3),
        ValueError,
        r"groups=3 must divide the input channels C_in=4",
    ),
    (
        lambda: F.conv(X, jnp.zeros((3, 3, 2, 5)), groups=2),
        ValueError,
        r"groups=2 must divide the output channels C_out=5",
    ),
    (lambda: F.conv(X, W, groups=0), ValueError, r"groups must be >= 1, got 0"),
    (lambda: F.conv(X, W, groups=2.0), TypeError, r"groups must be an int, got 2\.0"),
    (lambda: F.conv(X, W, jnp.zeros(4)), ValueError, r"bias must have shape \(C_out,\) = \(6,\), got shape \(4,\)"),
    (lambda: F.conv(X.astype(jnp.int32), W), TypeError, r"x must have a floating-point dtype.*int32"),
    (lambda: F.conv("image", W), TypeError, r"x must be an array, got 'image'"),
    # sizes
    (
        lambda: F.conv(X, jnp.zeros((9, 9, 4, 6)), padding="VALID"),
        ValueError,
        r"kernel of window \(9, 9\).*larger than the padded input.*input size 8",
    ),
    (lambda: F.conv(X, W, padding="VALID", dilation=4), ValueError, r"effective size 9.*larger than the padded input"),
    (lambda: F.max_pool(X, 9), ValueError, r"pooling window \(9, 9\).*larger than the padded input"),
    # strides, window, dilation
    (lambda: F.conv(X, W, strides=0), ValueError, r"strides must be >= 1 in every spatial dim, got 0"),
    (lambda: F.conv(X, W, strides=(1, -2)), ValueError, r"strides must be >= 1.*\(1, -2\)"),
    (lambda: F.conv(X, W, strides=(1, 2, 3)), ValueError, r"strides must be an int or a sequence of 2 ints.*3 entries"),
    (lambda: F.conv(X, W, strides="2"), TypeError, r"strides must be an int or a sequence of 2 ints, got '2'"),
    (lambda: F.conv(X, W, dilation=0), ValueError, r"dilation must be >= 1.*got 0"),
    (lambda: F.conv(X, W, dilation=1.0), TypeError, r"dilation must be an int, got 1\.0"),
    (lambda: F.max_pool(X, 0), ValueError, r"window must be >= 1.*got 0"),
    (lambda: F.avg_pool(X, (2, -1)), ValueError, r"window must be >= 1.*\(2, -1\)"),
    (lambda: F.max_pool(X, 2, strides=0), ValueError, r"strides must be >= 1"),
    (lambda: F.conv(X, W, flip="yes"), TypeError, r"flip must be True or False, got 'yes'"),
    (
        lambda: F.conv(X, W, padding_mode="mirror"),
        ValueError,
        r"padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got 'mirror'",
    ),
    (
        lambda: F.conv(X, W, padding=8, padding_mode="reflect"),
        ValueError,
        r"padding_mode='reflect' needs padding < input size.*size 8",
    ),
    (
        lambda: F.conv(X, W, padding=9, padding_mode="circular"),
        ValueError,
        r"padding_mode='circular' needs padding <= input size",
    ),
    # conv_transpose
    (lambda: F.conv_transpose(jnp.zeros((1, 4, 4, 5)), W), ValueError, r"y has 5 channels.*C_out is 6"),
    (
        lambda: F.conv_transpose(jnp.zeros((1, 4, 4, 6)), W, strides=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than the stride or the dilation.*output_padding=2, stride=2",
    ),
    (
        lambda: F.conv_transpose(jnp.zeros((1, 1, 1, 6)), W, padding=3),
        ValueError,
        r"conv_transpose output size would be",
    ),
    (
        lambda: F.conv_transpose(jnp.zeros((1, 4, 4, 6)), W, jnp.zeros(6)),
        ValueError,
        r"bias must have shape \(C_in,\) = \(4,\)",
    ),
    # dropout
    (lambda: F.dropout(X, 1.5, key=KEY), ValueError, r"rate must be a number in \[0, 1\], got 1\.5"),
    (lambda: F.dropout(X, -0.1, key=KEY), ValueError, r"rate must be a number in \[0, 1\], got -0\.1"),
    (lambda: F.dropout(X, float("nan"), key=KEY), ValueError, r"rate must be a number in \[0, 1\], got nan"),
    (lambda: F.dropout(X, "half", key=KEY), TypeError, r"rate must be a number in \[0, 1\], got 'half'"),
    (lambda: F.dropout(X, 0.5), ValueError, r"dropout with training=True needs a PRNG key"),
    (lambda: F.dropout(X, 0.5, key=3), TypeError, r"key must be a single PRNG key.*got 3"),
    (lambda: F.dropout(X, 0.5, key=jnp.zeros(2)), TypeError, r"key must be a single PRNG key.*float32"),
    (
        lambda: F.dropout(X, 0.5, key=jnp.zeros(3, jnp.uint32)),
        TypeError,
        r"key must be a single PRNG key.*shape \(3,\) and dtype uint32",
    ),
    (
        lambda: F.dropout(X, 0.5, key=KEY, mode="gaussian"),
        ValueError,
        r"mode must be one of 'inverted', 'scaled', got 'gaussian'",
    ),
    (
        lambda: F.dropout(X, 0.5, key=KEY, broadcast_axes=(4,)),
        ValueError,
        r"broadcast_axes has axis 4, out of range for an input of rank 4",
    ),
    # norms
    (
        lambda: F.batch_norm(X, jnp.zeros(3), jnp.ones(4), training=True),
        ValueError,
        r"mean must have shape \(C,\) = \(4,\), got shape \(3,\)",
    ),
    (
        lambda: F.batch_norm(X, jnp.zeros(4), jnp.ones(4), training=1),
        TypeError,
        r"training must be True or False, got 1",
    ),
    (
        lambda: F.batch_norm(X, jnp.zeros(4), jnp.ones(4), training=True, momentum=1.1),
        ValueError,
        r"momentum must be a number in \[0, 1\], got 1\.1",
    ),
    (
        lambda: F.batch_norm(X, jnp.zeros(4), jnp.ones(4), training=True, epsilon=-1.0),
        ValueError,
        r"epsilon must be a finite number >= 0, got -1\.0",
    ),
    (lambda: F.group_norm(X, 3), ValueError, r"num_groups must be a positive divisor of the channels C=4, got 3"),
    # counts (a width, a number of layers): one rule, _validate.as_int(..., minimum=1)
    (lambda: _validate.as_int(0, "num_layers", minimum=1), ValueError, r"^num_layers must be >= 1, got 0$"),
    (lambda: _validate.as_int(np.int64(-3), "width", minimum=1), ValueError, r"^width must be >= 1, got -3$"),
    (lambda: _validate.as_int(2.0, "width", minimum=1), TypeError, r"^width must be an int, got 2\.0"),
    (
        lambda: F.layer_norm(X, jnp.ones(5)),
        ValueError,
        r"scale must have shape x\.shape\[1:\] = \(8, 8, 4\) or a trailing part of it, got shape \(5,\)",
    ),
]


@pytest.mark.parametrize("call, exc, pattern", CASES, ids=[p[:40] for _, _, p in CASES])
def test_bad_argument_raises_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("value, minimum, expected", [(1, 1, 1), (np.int64(5), 1, 5), (0, 0, 0), (-2, None, -2)])
def test_as_int_accepts_values_at_or_above_its_minimum(value, minimum, expected):
    out = _validate.as_int(value, "n", minimum=minimum)
    assert out == expected and type(out) is int


def test_errors_are_raised_at_trace_time_under_jit():
    """Inside jit the same ValueError comes from tracing, before XLA compiles anything."""

    @jax.jit
    def f(x, w):
        return F.conv(x, w, strides=0)

    with pytest.raises(ValueError, match="strides must be >= 1"):
        f(X, W)

    @jax.jit
    def g(x):
        return F.dropout(x, 0.5)

    with pytest.raises(ValueError, match="needs a PRNG key"):
        g(X)


def test_traced_rate_is_a_type_error_that_says_how_to_fix_it():
    with pytest.raises(TypeError, match="rate must be a concrete number.*static_argnames='rate'"):
        jax.jit(lambda x, r: F.dropout(x, r, key=KEY))(X, 0.5)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("VALID", ((0, 0), (0, 0))),
        ("valid", ((0, 0), (0, 0))),
        ("SAME", ((1, 1), (0, 1))),  # n=(7, 9), k_eff=(3, 2), s=(1, 2): out ceil(9/2)=5, total 4*2+2-9=1
        ("FULL", ((2, 2), (1, 1))),
        ("causal", ((2, 0), (1, 0))),
        (2, ((2, 2), (2, 2))),
        (np.int64(1), ((1, 1), (1, 1))),
        ((1, 3), ((1, 1), (3, 3))),
        (((0, 1), (2, 3)), ((0, 1), (2, 3))),
        ([[0, 1], [2, 3]], ((0, 1), (2, 3))),
    ],
)
def test_padding_pairs_table(spec, expected):
    assert _validate.padding_pairs(spec, (7, 9), (3, 2), (1, 2)) == expected


def test_padding_pairs_rejects_strings_a_caller_does_not_allow():
    with pytest.raises(ValueError, match="padding must be one of 'VALID', 'SAME'"):
        _validate.padding_pairs("FULL", (5,), (3,), (1,), allowed=("VALID", "SAME"))


@pytest.mark.parametrize("n, k, s", [(n, k, s) for n in range(1, 12) for k in (1, 2, 3, 5) for s in (1, 2, 3)])
def test_same_output_is_ceil_n_over_s(n, k, s):
    lo, hi = _validate.same_pads(n, k, s)
    assert _validate.out_size(n, (lo, hi), k, s) == -(-n // s)
    assert 0 <= hi - lo <= 1


def test_numpy_key_data_is_a_valid_key():
    """Key data restored as NumPy (e.g. from a checkpoint) works like the jax.Array it came from."""
    raw = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(F.dropout(X + 1, 0.5, key=np.asarray(raw)), F.dropout(X + 1, 0.5, key=raw))
