"""Tests of ``jaxcnn.nn``: the Flax modules that wrap ``jaxcnn.functional``.

Oracles: PyTorch CPU modules (``torch.nn.Conv2d`` & co.) with their weights
copied into the Flax modules; PyTorch's own parameter shapes; ``flax.linen``'s
own BatchNorm for the ``init``/``batch_stats`` protocol; single-device batch
norm for the pmap-synchronized one; hand-worked numbers. The "wiring" table
checks each module calls its functional op with its own parameters and
attributes (it compares against ``jaxcnn.functional``, which has its own
oracle tests; that part only checks the plumbing).
"""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracles import from_torch, to_torch

import jaxcnn.functional as F
import jaxcnn.nn as jnn

torch.set_num_threads(1)

TOL = dict(rtol=1e-4, atol=1e-5)
# "rbg" keys: compiling Flax's truncated-normal initializers over threefry keys costs
# ~10 s per small ResNet on this CPU, over rbg keys ~1 s; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")


def conv_weight_from_torch(w: torch.Tensor) -> np.ndarray:
    """PyTorch conv weight ``(O, I, *window)`` -> ``(*window, I, O)``.

    The same permutation maps ``ConvTransposeNd.weight`` ``(C_y, features // g,
    *window)`` to our transpose kernel ``(*window, features // g, C_y)``.
    """
    w = w.detach().numpy()
    nd = w.ndim - 2
    return np.transpose(w, (*range(2, nd + 2), 1, 0)).copy()


def vec(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()


def shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


# ----------------------------------------------------------------- wiring ---

WIRING = [
    # (module, input shape, functional call with the module's params p)
    (
        jnn.Conv(3, (3, 2), strides=(2, 1), padding="VALID", dilation=(1, 2)),
        (2, 7, 6, 4),
        lambda p, x: F.conv(x, p["kernel"], p["bias"], strides=(2, 1), padding="VALID", dilation=(1, 2)),
    ),
    (
        jnn.Conv(4, 3, groups=2, padding_mode="circular", flip=True, use_bias=False),
        (1, 5, 4),
        lambda p, x: F.conv(x, p["kernel"], groups=2, padding_mode="circular", flip=True),
    ),
    (
        jnn.Conv(2, 2, padding="CAUSAL"),
        (1, 3, 3, 3, 1),
        lambda p, x: F.conv(x, p["kernel"], p["bias"], padding="CAUSAL"),
    ),
    (
        jnn.ConvTranspose(4, 3, strides=2, padding=1, output_padding=1, groups=2),
        (2, 3, 3, 2),
        lambda p, x: F.conv_transpose(x, p["kernel"], p["bias"], strides=2, padding=1, output_padding=1, groups=2),
    ),
    (jnn.MaxPool(3, strides=2, padding=1, ceil_mode=True), (1, 6, 6, 2), lambda p, x: F.max_pool(x, 3, 2, 1, True)),
    (
        jnn.AvgPool(2, strides=1, padding=1, count_include_pad=False),
        (1, 5, 2),
        lambda p, x: F.avg_pool(x, 2, 1, 1, False, False),
    ),
    (jnn.GlobalAvgPool(), (2, 3, 4, 5), lambda p, x: F.global_avg_pool(x)),
    (jnn.GlobalMaxPool(), (2, 3, 4, 5), lambda p, x: F.global_max_pool(x)),
    (jnn.AdaptiveAvgPool((2, 3)), (2, 5, 7, 3), lambda p, x: F.adaptive_avg_pool(x, (2, 3))),
    (jnn.AdaptiveMaxPool(2), (2, 5, 7, 3), lambda p, x: F.adaptive_max_pool(x, 2)),
    (jnn.Flatten(), (2, 3, 4, 5), lambda p, x: x.reshape(2, 60)),
    (jnn.GroupNorm(num_groups=2), (2, 3, 4), lambda p, x: F.group_norm(x, 2, p["scale"], p["bias"])),
    (jnn.LayerNorm(epsilon=1e-3), (2, 3, 4), lambda p, x: F.layer_norm(x, p["scale"], p["bias"], epsilon=1e-3)),
]


@pytest.mark.parametrize(
    "module, shape, functional", WIRING, ids=lambda v: type(v).__name__ if isinstance(v, fnn.Module) else ""
)
def test_module_calls_its_functional_op(module, shape, functional, rng):
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    variables = module.init(KEY, x)
    params = variables.get("params", {})
    # perturb the parameters so a scale/bias left out of the call would show
    params = jax.tree.map(lambda a: a + jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
    got = module.apply({"params": params} if params else {}, x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(functional(params, x)))


def test_batch_norm_wiring(rng):
    x = jnp.asarray(rng.standard_normal((4, 3, 2)), jnp.float32)
    bn = jnn.BatchNorm(momentum=0.8, epsilon=1e-3)
    bn.init(KEY, x, use_running_average=True)
    stats = {
        "mean": jnp.asarray(rng.standard_normal(2), jnp.float32),
        "var": jnp.asarray(rng.uniform(1, 2, 2), jnp.float32),
    }
    params = {"scale": jnp.asarray([2.0, 3.0]), "bias": jnp.asarray([1.0, -1.0])}
    y, upd = bn.apply({"params": params, "batch_stats": stats}, x, use_running_average=False, mutable=["batch_stats"])
    y_f, (m_f, v_f) = F.batch_norm(
        x, stats["mean"], stats["var"], params["scale"], params["bias"], training=True, momentum=0.8, epsilon=1e-3
    )
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_f))
    np.testing.assert_array_equal(np.asarray(upd["batch_stats"]["mean"]), np.asarray(m_f))
    np.testing.assert_array_equal(np.asarray(upd["batch_stats"]["var"]), np.asarray(v_f))
    y_eval = bn.apply({"params": params, "batch_stats": stats}, x, use_running_average=True)
    y_f_eval, _ = F.batch_norm(
        x, stats["mean"], stats["var"], params["scale"], params["bias"], training=False, epsilon=1e-3
    )
    np.testing.assert_array_equal(np.asarray(y_eval), np.asarray(y_f_eval))


# --------------------------------------------- parameter shapes vs PyTorch ---

PARAM_SHAPES = [
    # (jaxcnn module, input shape NHWC, torch module, {our name: torch name})
    (jnn.Conv(5, 3), (1, 8, 4), torch.nn.Conv1d(4, 5, 3), "conv"),
    (jnn.Conv(6, (3, 2), groups=3), (1, 6, 6, 3), torch.nn.Conv2d(3, 6, (3, 2), groups=3), "conv"),
    (jnn.Conv(4, (1, 2, 3)), (1, 4, 4, 4, 2), torch.nn.Conv3d(2, 4, (1, 2, 3)), "conv"),
    (jnn.ConvTranspose(6, (3, 2), groups=2), (1, 4, 4, 4), torch.nn.ConvTranspose2d(4, 6, (3, 2), groups=2), "conv"),
    (jnn.BatchNorm(use_running_average=True), (2, 3, 3, 5), torch.nn.BatchNorm2d(5), "norm"),
    (jnn.GroupNorm(num_groups=2), (2, 3, 3, 6), torch.nn.GroupNorm(2, 6), "norm"),
    (jnn.LayerNorm(), (2, 3, 4, 5), torch.nn.LayerNorm((5, 3, 4)), "layer"),
]


@pytest.mark.parametrize(
    "module, shape, tmod, kind",
    PARAM_SHAPES,
    ids=lambda v: type(v).__name__ if isinstance(v, (fnn.Module, torch.nn.Module)) else "",
)
def test_parameter_shapes_match_pytorch(module, shape, tmod, kind):
    variables = jax.eval_shape(module.init, KEY, jnp.zeros(shape))
    got = shapes(variables["params"])
    w = tmod.weight
    if kind == "conv":
        permuted = conv_weight_from_torch(w).shape
        assert got == {"kernel": permuted, "bias": tuple(tmod.bias.shape)}
    elif kind == "norm":
        assert got == {"scale": tuple(w.shape), "bias": tuple(tmod.bias.shape)}
    else:  # LayerNorm: torch (C, H, W) is our (H, W, C)
        moved = np.moveaxis(w.detach().numpy(), 0, -1).shape
        assert got == {"scale": moved, "bias": moved}
    if isinstance(tmod, torch.nn.BatchNorm2d):
        assert shapes(variables["batch_stats"]) == {
            "mean": tuple(tmod.running_mean.shape),
            "var": tuple(tmod.running_var.shape),
        }
    n_torch = sum(p.numel() for p in tmod.parameters())
    assert sum(int(np.prod(s)) for s in jax.tree.leaves(got, is_leaf=lambda s: isinstance(s, tuple))) == n_torch


# ------------------------------------------ forward outputs vs PyTorch ---

CONV_CASES = [
    # (torch module, our module, input NHWC shape)
    (
        torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
        jnn.Conv(6, 3, strides=2, padding=1, dilation=2, groups=2),
        (2, 11, 4),
    ),
    (
        torch.nn.Conv2d(3, 4, (3, 2), padding=(1, 1), padding_mode="reflect"),
        jnn.Conv(4, (3, 2), padding=1, padding_mode="reflect"),
        (2, 6, 5, 3),
    ),
    (
        torch.nn.Conv2d(2, 4, 3, padding=2, padding_mode="circular", dilation=2),
        jnn.Conv(4, 3, padding=2, padding_mode="circular", dilation=2),
        (1, 6, 7, 2),
    ),
    (
        torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate", groups=4, bias=False),
        jnn.Conv(4, 3, padding=1, padding_mode="replicate", groups=4, use_bias=False),
        (1, 5, 5, 4),
    ),
    (torch.nn.Conv2d(3, 5, 4, padding="same"), jnn.Conv(5, 4, padding="SAME"), (1, 7, 6, 3)),
    (
        torch.nn.Conv3d(2, 3, (2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        jnn.Conv(3, (2, 3, 3), strides=(1, 2, 2), padding=(0, 1, 1)),
        (1, 4, 6, 5, 2),
    ),
    (
        torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
        jnn.ConvTranspose(3, 3, strides=2, padding=1, output_padding=1),
        (2, 4, 5, 4),
    ),
    (
        torch.nn.ConvTranspose2d(
            4, 6, (2, 3), stride=(3, 2), padding=(1, 0), output_padding=(2, 1), groups=2, dilation=(1, 2)
        ),
        jnn.ConvTranspose(
            6, (2, 3), strides=(3, 2), padding=((1, 1), (0, 0)), output_padding=(2, 1), groups=2, dilation=(1, 2)
        ),
        (1, 3, 4, 4),
    ),
    (torch.nn.ConvTranspose1d(2, 3, 4, stride=3), jnn.ConvTranspose(3, 4, strides=3), (2, 5, 2)),
]


@pytest.mark.parametrize("tmod, module, shape", CONV_CASES, ids=range(len(CONV_CASES)))
def test_conv_with_pytorch_weights_matches_pytorch(tmod, module, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    params = {"kernel": conv_weight_from_torch(tmod.weight)}
    if tmod.bias is not None:
        params["bias"] = vec(tmod.bias)
    # the module's own parameter tree has exactly these names and shapes
    assert shapes(jax.eval_shape(module.init, KEY, x)["params"]) == shapes(params)
    got = module.apply({"params": params}, x)
    want = from_torch(tmod(to_torch(x)))
    np.testing.assert_allclose(np.asarray(got), want, **TOL)


def _torch_bn(c, rng):
    t = torch.nn.BatchNorm2d(c, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(rng.uniform(0.5, 2, c)))
        t.bias.copy_(torch.tensor(rng.standard_normal(c)))
        t.running_mean.copy_(torch.tensor(rng.standard_normal(c)))
        t.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, c)))
    return t


def _bn_variables(t):
    return {
        "params": {"scale": vec(t.weight), "bias": vec(t.bias)},
        "batch_stats": {"mean": vec(t.running_mean), "var": vec(t.running_var)},
    }


def test_batch_norm_eval_matches_pytorch(rng):
    t = _torch_bn(3, rng).eval()
    x = (rng.standard_normal((4, 5, 6, 3)) * 2 + 1).astype(np.float32)
    got = jnn.BatchNorm(use_running_average=True).apply(_bn_variables(t), x)
    np.testing.assert_allclose(np.asarray(got), from_torch(t(to_torch(x))), **TOL)


def test_batch_norm_train_matches_pytorch_with_momentum_and_variance_conversion(rng):
    """Training mode: same output; running statistics agree once the two conventions are converted.

    PyTorch ``momentum=0.1`` is our ``momentum=0.9``. Both normalize with the
    biased batch variance, but PyTorch's running variance takes the unbiased
    one, ``m / (m - 1)`` times larger (``m = N * H * W`` values per channel), so
    the variance update is compared after converting PyTorch's batch term.
    """
    t = _torch_bn(3, rng).train()
    old_var = vec(t.running_var)
    before = _bn_variables(t)
    x = (rng.standard_normal((4, 3, 2, 3)) * 2 + 1).astype(np.float32)
    m = 4 * 3 * 2
    want = from_torch(t(to_torch(x)))  # updates t's running statistics in place
    y, upd = jnn.BatchNorm(momentum=0.9).apply(before, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y), want, **TOL)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), vec(t.running_mean), **TOL)
    torch_batch_var_unbiased = (vec(t.running_var) - 0.9 * old_var) / 0.1
    ours_expected = 0.9 * old_var + 0.1 * torch_batch_var_unbiased * (m - 1) / m
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["var"]), ours_expected, **TOL)
    # and the difference is real: copying PyTorch's running variance would be wrong
    assert not np.allclose(np.asarray(upd["batch_stats"]["var"]), vec(t.running_var), rtol=1e-3)


def test_batch_norm_follows_flax_protocol(rng):
    """``init`` and training updates of ``batch_stats`` as ``flax.linen.BatchNorm`` does them."""
    x = rng.standard_normal((6, 4)).astype(np.float32) * 3 + 2
    ours, theirs = jnn.BatchNorm(momentum=0.8), fnn.BatchNorm(momentum=0.8)
    v_ours = ours.init(KEY, x, use_running_average=False)
    v_theirs = theirs.init(KEY, x, use_running_average=False)
    assert shapes(v_ours) == shapes(v_theirs)
    for col in ("params", "batch_stats"):
        for k in v_theirs[col]:
            np.testing.assert_array_equal(np.asarray(v_ours[col][k]), np.asarray(v_theirs[col][k]))
    np.testing.assert_array_equal(np.asarray(v_ours["batch_stats"]["mean"]), np.zeros(4))  # init leaves them
    np.testing.assert_array_equal(np.asarray(v_ours["batch_stats"]["var"]), np.ones(4))
    y1, u1 = ours.apply(v_ours, x, use_running_average=False, mutable=["batch_stats"])
    y2, u2 = theirs.apply(v_theirs, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), **TOL)
    for k in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(u1["batch_stats"][k]), np.asarray(u2["batch_stats"][k]), **TOL)
    with pytest.raises(ValueError, match="use_running_average"):
        ours.apply(v_ours, x)  # neither attribute nor argument
    with pytest.raises(TypeError, match="use_running_average"):
        ours.apply(v_ours, x, use_running_average=jnp.asarray(True))


def test_group_and_layer_norm_match_pytorch(rng):
    x = (rng.standard_normal((2, 3, 4, 6)) * 2 + 1).astype(np.float32)
    tg = torch.nn.GroupNorm(3, 6, eps=1e-5)
    tl = torch.nn.LayerNorm((6, 3, 4), eps=1e-4)
    with torch.no_grad():
        for t in (tg, tl):
            t.weight.copy_(torch.tensor(rng.standard_normal(tuple(t.weight.shape))))
            t.bias.copy_(torch.tensor(rng.standard_normal(tuple(t.bias.shape))))
    got = jnn.GroupNorm(num_groups=3).apply({"params": {"scale": vec(tg.weight), "bias": vec(tg.bias)}}, x)
    np.testing.assert_allclose(np.asarray(got), from_torch(tg(to_torch(x))), **TOL)
    ln_params = {"scale": np.moveaxis(vec(tl.weight), 0, -1), "bias": np.moveaxis(vec(tl.bias), 0, -1)}
    got = jnn.LayerNorm(epsilon=1e-4).apply({"params": ln_params}, x)
    np.testing.assert_allclose(np.asarray(got), from_torch(tl(to_torch(x))), **TOL)
    # GroupNorm(1) is the per-channel-affine layer norm (PyTorch's GroupNorm(1, C))
    t1 = torch.nn.GroupNorm(1, 6)
    got = jnn.GroupNorm(num_groups=1).apply({"params": {"scale": vec(t1.weight), "bias": vec(t1.bias)}}, x)
    np.testing.assert_allclose(np.asarray(got), from_torch(t1(to_torch(x))), **TOL)


POOL_CASES = [
    (jnn.MaxPool(3, strides=2, padding=1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 8, 7, 3)),
    (jnn.MaxPool((2, 3)), torch.nn.MaxPool2d((2, 3)), (1, 6, 7, 2)),
    (
        jnn.AvgPool(3, strides=2, padding=1, count_include_pad=False),
        torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        (2, 7, 6, 2),
    ),
    (jnn.AvgPool(2, strides=1, padding=1, ceil_mode=True), torch.nn.AvgPool1d(2, 1, 1, ceil_mode=True), (2, 5, 3)),
    (jnn.AvgPool(2), torch.nn.AvgPool3d(2), (1, 4, 4, 5, 2)),
    (jnn.AdaptiveAvgPool((3, 2)), torch.nn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5, 3)),
    (jnn.AdaptiveMaxPool(3), torch.nn.AdaptiveMaxPool2d(3), (2, 7, 5, 3)),
    (jnn.GlobalAvgPool(), torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), (2, 5, 4, 3)),
    (jnn.GlobalMaxPool(), torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()), (2, 5, 4, 3)),
]


@pytest.mark.parametrize("module, tmod, shape", POOL_CASES, ids=range(len(POOL_CASES)))
def test_pools_match_pytorch(module, tmod, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    got = np.asarray(module.apply({}, x))
    want = tmod(to_torch(x)).detach().numpy()
    want = want if want.ndim == 2 else np.moveaxis(want, 1, -1)
    np.testing.assert_allclose(got, want, **TOL)


# ------------------------------------------------- a whole small CNN ---


class SmallCNN(fnn.Module):
    """conv -> BN -> ReLU -> max pool -> conv -> ReLU -> avg pool -> flatten -> dense."""

    @fnn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(6, 3, padding=1, name="conv1")(x)
        x = jnn.BatchNorm(use_running_average=not train, name="bn1")(x)
        x = jnn.MaxPool(2, name="pool1")(jnn.relu(x))
        x = jnn.relu(jnn.Conv(8, 3, strides=2, padding=1, dilation=1, name="conv2")(x))
        x = jnn.AvgPool(2, name="pool2")(x)
        x = jnn.Flatten(name="flatten")(x)
        return jnn.Dense(5, name="dense")(x)


def test_small_cnn_with_copied_pytorch_weights_matches_pytorch(rng):
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 5),
    )
    bn = tnet[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(rng.standard_normal(6)))
        bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, 6)))
        bn.weight.copy_(torch.tensor(rng.uniform(0.5, 2, 6)))
        bn.bias.copy_(torch.tensor(rng.standard_normal(6)))
    tnet.eval()
    x = rng.standard_normal((3, 16, 16, 2)).astype(np.float32)
    model = SmallCNN()
    template = jax.eval_shape(model.init, KEY, x)
    # torch's Flatten orders (c, h, w), ours (h, w, c): permute the dense rows
    lin = tnet[8].weight.detach().numpy().reshape(5, 8, 2, 2)  # (out, c, h, w)
    dense_kernel = np.transpose(lin, (2, 3, 1, 0)).reshape(2 * 2 * 8, 5)
    variables = {
        "params": {
            "conv1": {"kernel": conv_weight_from_torch(tnet[0].weight), "bias": vec(tnet[0].bias)},
            "bn1": {"scale": vec(bn.weight), "bias": vec(bn.bias)},
            "conv2": {"kernel": conv_weight_from_torch(tnet[4].weight), "bias": vec(tnet[4].bias)},
            "dense": {"kernel": dense_kernel, "bias": vec(tnet[8].bias)},
        },
        "batch_stats": {"bn1": {"mean": vec(bn.running_mean), "var": vec(bn.running_var)}},
    }
    assert shapes(template) == shapes(variables)
    got = jax.jit(model.apply)(variables, x)
    want = tnet(to_torch(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------- dropout ---


def test_dropout_uses_the_dropout_stream_deterministically():
    x = jnp.ones((4, 50))
    layer = jnn.Dropout(0.5)
    a = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1, impl="rbg")})
    b = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1, impl="rbg")})
    c = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(2, impl="rbg")})
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert set(np.unique(np.asarray(a)).tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - 0.5)
    # training without any PRNG stream is an error (Flax falls back to "params" if given)
    with pytest.raises(Exception, match="dropout"):
        layer.apply({}, x, deterministic=False)
    custom = jnn.Dropout(0.5, rng_collection="noise")
    d = custom.apply({}, x, deterministic=False, rngs={"noise": jax.random.key(1, impl="rbg")})
    np.testing.assert_array_equal(np.asarray(a), np.asarray(d))  # same key -> same mask


def test_dropout_deterministic_is_identity_and_scaled_mode_multiplies(rng):
    x = jnp.asarray(rng.standard_normal((3, 7)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(jnn.Dropout(0.3).apply({}, x, deterministic=True)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(jnn.Dropout(0.3, deterministic=True).apply({}, x)), np.asarray(x))
    scaled = jnn.Dropout(0.25, mode="scaled", deterministic=True).apply({}, x)
    np.testing.assert_allclose(np.asarray(scaled), 0.75 * np.asarray(x), rtol=1e-6)
    train = jnn.Dropout(0.25, mode="scaled").apply({}, x, deterministic=False, rngs={"dropout": KEY})
    kept = np.asarray(train) != 0
    np.testing.assert_array_equal(np.asarray(train)[kept], np.asarray(x)[kept])  # no rescaling
    # rate 0 needs no key at all
    np.testing.assert_array_equal(np.asarray(jnn.Dropout(0.0).apply({}, x, deterministic=False)), np.asarray(x))
    with pytest.raises(ValueError, match="deterministic"):
        jnn.Dropout(0.3).apply({}, x)


def test_dropout_broadcast_axes_drop_whole_feature_maps():
    x = jnp.ones((2, 5, 5, 16))
    y = np.asarray(jnn.Dropout(0.5, broadcast_axes=(1, 2)).apply({}, x, deterministic=False, rngs={"dropout": KEY}))
    per_map = y.reshape(2, 25, 16)
    assert np.all(per_map.min(axis=1) == per_map.max(axis=1))  # each (n, c) map all kept or all dropped


# ------------------------------------------------------ pmap / sync BN ---


def test_sync_batch_norm_under_pmap_equals_global_batch(rng):
    n_dev = jax.device_count()
    assert n_dev == 8
    x = (rng.standard_normal((n_dev * 2, 3, 3, 4)) * 2 + 1).astype(np.float32)
    v = jnn.BatchNorm().init(KEY, x[:2], use_running_average=False)  # init outside pmap: no axis needed
    v = {
        "params": {"scale": jnp.asarray([1.0, 2.0, 0.5, 1.5]), "bias": jnp.asarray([0.0, 1.0, -1.0, 2.0])},
        "batch_stats": v["batch_stats"],
    }

    def step(variables, xb, axis_name):
        return jnn.BatchNorm(axis_name=axis_name).apply(
            variables, xb, use_running_average=False, mutable=["batch_stats"]
        )

    y_sync, upd_sync = jax.pmap(lambda xb: step(v, xb, "batch"), axis_name="batch")(x.reshape(n_dev, 2, 3, 3, 4))
    y_one, upd_one = step(v, x, None)
    np.testing.assert_allclose(np.asarray(y_sync).reshape(x.shape), np.asarray(y_one), **TOL)
    for k in ("mean", "var"):
        for d in range(n_dev):
            np.testing.assert_allclose(
                np.asarray(upd_sync["batch_stats"][k][d]), np.asarray(upd_one["batch_stats"][k]), **TOL
            )
    # without axis_name each device would use its own statistics: different
    y_local, _ = jax.pmap(lambda xb: step(v, xb, None))(x.reshape(n_dev, 2, 3, 3, 4))
    assert not np.allclose(np.asarray(y_local).reshape(x.shape), np.asarray(y_one), atol=1e-3)


# ----------------------------------------------------------- dtypes ---


def test_bf16_compute_with_f32_params(rng):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    conv = jnn.Conv(4, 3, dtype=jnp.bfloat16)
    v = conv.init(KEY, x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    y16 = conv.apply(v, x)
    assert y16.dtype == jnp.bfloat16
    y32 = jnn.Conv(4, 3).apply(v, x)
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=3e-2, atol=3e-2)

    bn = jnn.BatchNorm(dtype=jnp.bfloat16)
    vb = bn.init(KEY, x, use_running_average=False)
    yb, upd = bn.apply(vb, x.astype(jnp.bfloat16), use_running_average=False, mutable=["batch_stats"])
    assert yb.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((vb, upd)))
    mean = x.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), 0.1 * mean, atol=2e-3)
    # dtype=None follows the inputs and parameters, as Flax: bf16 input, f32 params -> f32
    assert jnn.Conv(4, 3).apply(v, x.astype(jnp.bfloat16)).dtype == jnp.float32
    # bf16 params
    v16 = jnn.Conv(4, 3, param_dtype=jnp.bfloat16).init(KEY, x)
    assert v16["params"]["kernel"].dtype == jnp.bfloat16
    ct = jnn.ConvTranspose(2, 3, strides=2, dtype=jnp.bfloat16)
    assert ct.apply(ct.init(KEY, x), x).dtype == jnp.bfloat16
    for m in (jnn.GroupNorm(num_groups=1, dtype=jnp.bfloat16), jnn.LayerNorm(dtype=jnp.bfloat16)):
        assert m.apply(m.init(KEY, x), x).dtype == jnp.bfloat16


# --------------------------------------------------------- validation ---


def test_errors_name_the_argument(rng):
    x = jnp.zeros((1, 6, 6, 4))
    with pytest.raises(ValueError, match="kernel_size"):
        jnn.Conv(2, (3, 3, 3)).init(KEY, x)
    with pytest.raises(ValueError, match="groups=3"):
        jnn.Conv(6, 3, groups=3).init(KEY, x)
    with pytest.raises(ValueError, match="features"):
        jnn.Conv(0, 3).init(KEY, x)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        jnn.ConvTranspose(6, 3, groups=4).init(KEY, x)
    with pytest.raises(ValueError, match=r"\(N, \*spatial, C\)"):
        jnn.Conv(2, 3).init(KEY, jnp.zeros((6, 4)))
    with pytest.raises(ValueError, match="padding_mode"):
        jnn.Conv(2, 3, padding_mode="mirror").init(KEY, x)
    with pytest.raises(ValueError, match="num_groups"):
        jnn.GroupNorm(num_groups=3).init(KEY, x)
    with pytest.raises(ValueError, match="rate"):
        jnn.Dropout(1.5).apply({}, x, deterministic=False, rngs={"dropout": KEY})
