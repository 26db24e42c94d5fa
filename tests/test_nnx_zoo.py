"""The zoo in NNX: get_model(name, api="nnx") for every model, equal parameter counts and equal outputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcnn
import jaxcnn.nnx as jnnx
from jaxcnn.models import get_model as linen_model
from jaxcnn.models import list_models

KEY = jax.random.key(0)


def _count(tree):
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def test_input_shape_table_covers_every_registered_model():
    assert sorted(jnnx.INPUT_SHAPES) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_has_the_linen_parameter_tree(name):
    """Built abstractly (nnx.eval_shape): the NNX state is the Linen variables' tree, leaf by leaf."""
    model = nnx.eval_shape(lambda: jaxcnn.get_model(name, api="nnx", rngs=0))
    x = jax.ShapeDtypeStruct(jnnx.INPUT_SHAPES[name], jnp.float32)
    want = jax.eval_shape(lambda: linen_model(name).init(KEY, jnp.zeros(x.shape), train=False))
    for collection, kind in (("params", nnx.Param), ("batch_stats", nnx.BatchStat)):
        got = {tuple(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(model, kind))}
        ref = {p: v.shape for p, v in jax.tree_util.tree_flatten_with_path(dict(want.get(collection, {})))[0]}
        ref = {tuple(k.key for k in p): s for p, s in ref.items()}
        assert got == ref, (name, collection)
    assert _count(nnx.state(model, nnx.Param)) == _count(want["params"])
    if name == "lwls_cnn":
        assert _count(nnx.state(model, nnx.Param)) == 122270
    if name == "resnet18":
        assert _count(nnx.state(model, nnx.Param)) == 11689512


# name -> (options, input shape); every one runs train and eval and compares with Linen
RUN = {
    "lwls_cnn": ({"dropout_rate": 0.5}, (4, 28, 28, 1)),
    "lenet5": ({}, (2, 28, 28, 1)),
    "resnet_tiny": ({}, (4, 8, 8, 3)),
    "wavenet_tiny": ({}, (2, 20, 1)),
    "cnn3d": ({}, (2, 8, 8, 8, 1)),
    "cnn1d": ({"batch_norm": True, "dropout_rate": 0.2}, (4, 40)),
    "mlp": ({"widths": (16, 8), "dropout_rate": 0.5, "batch_norm": True}, (4, 6, 6, 1)),
}


def converted(name, shape, **options):
    """The Linen model, its variables (rbg init: fast to compile) and the NNX model holding them.

    The NNX model is built abstractly (``nnx.eval_shape``, no "dropout" stream)
    and gets every value from the Linen variables.
    """
    linen = linen_model(name, **options)
    variables = jax.jit(lambda k: linen.init(k, jnp.zeros(shape), train=False))(jax.random.key(1, impl="rbg"))
    abstract = nnx.eval_shape(
        lambda: jaxcnn.get_model(name, api="nnx", rngs=nnx.Rngs(params=0), input_shape=shape, **options)
    )
    return linen, variables, jnnx.from_linen(abstract, variables)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in ("mlp", "cnn1d") else n for n in sorted(RUN)]
)
def test_converted_zoo_model_equals_linen_in_train_and_eval(name):
    options, shape = RUN[name]
    x = jax.random.normal(KEY, shape)
    linen, variables, model = converted(name, shape, **options)
    key = jax.random.key(3)
    want, updates = jax.jit(lambda v: linen.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]))(
        variables
    )
    got = nnx.jit(lambda m: m(x, train=True, rngs=key))(model)
    np.testing.assert_array_equal(want, got)
    if updates:
        jax.tree.map(np.testing.assert_array_equal, dict(updates)["batch_stats"], jnnx.to_linen(model)["batch_stats"])
        variables = {**variables, **updates}
    model.eval()
    np.testing.assert_array_equal(jax.jit(lambda v: linen.apply(v, x))(variables), nnx.jit(lambda m: m(x))(model))


@pytest.mark.slow
def test_resnet18_equals_linen():
    x = jax.random.normal(KEY, (2, 32, 32, 3))
    linen, variables, model = converted("resnet18", x.shape, num_classes=10, stem="cifar")
    want, updates = jax.jit(lambda v: linen.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
    np.testing.assert_allclose(want, nnx.jit(lambda m: m(x, train=True))(model), rtol=0, atol=0)
    jax.tree.map(np.testing.assert_array_equal, dict(updates)["batch_stats"], jnnx.to_linen(model)["batch_stats"])


def test_nnx_zoo_model_is_a_real_nnx_module():
    model = jaxcnn.get_model("lwls_cnn", api="nnx", rngs=0, dropout_rate=0.5)
    assert isinstance(model.conv1, jnnx.Conv) and isinstance(model.conv1.kernel, nnx.Param)
    assert isinstance(model.dropout, jnnx.Dropout) and isinstance(model.dense2, nnx.Linear)
    resnet = nnx.eval_shape(lambda: jaxcnn.get_model("resnet_tiny", api="nnx"))
    assert isinstance(resnet.layer1_block1["bn1"].mean, nnx.BatchStat)
    model.eval()
    x = jnp.ones((3, 28, 28, 1))
    np.testing.assert_array_equal(model(x), model(x))  # eval: no dropout
    model.train()
    a, b = model(x), model(x)  # the stored dropout stream draws a new key per call
    assert not np.array_equal(a, b)


def test_api_argument_errors():
    with pytest.raises(ValueError, match="api"):
        jaxcnn.get_model("lwls_cnn", api="torch")
    with pytest.raises(ValueError, match="for api='nnx'"):
        jaxcnn.get_model("lwls_cnn", rngs=0)
    with pytest.raises(TypeError, match="jaxcnn.get_model"):
        linen_model("lwls_cnn", api="nnx")
    with pytest.raises(TypeError, match="input_shape"):
        jaxcnn.get_model("lwls_cnn", api="nnx", input_shape=28)
    with pytest.raises(TypeError, match="linen_model must be"):
        jnnx.Mirror(object(), rngs=nnx.Rngs(0))
    assert type(jaxcnn.get_model("lwls_cnn")) is type(linen_model("lwls_cnn"))
