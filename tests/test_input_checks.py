"""Bad input to modules, models, the train state, optimizers and labels: what each message says."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn.data as D
import jaxcnn.functional as F
from jaxcnn.models import check_input, get_model
from jaxcnn.train import create_train_state, make_optimizer
from jaxcnn.train.checks import check_batch, check_finite, check_labels, first_nonfinite, labels_in_range

KEY = jax.random.key(0, impl="rbg")


@functools.cache
def _model(name, size, **kw):
    """A zoo model and zero variables of its init's shapes (traced, not compiled: the checks read shapes only)."""
    model = get_model(name, **kw)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), KEY, jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    )
    return model, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)


def _trace(model, variables, x, **kw):
    """``model.apply`` traced only (the checks run at trace time; nothing is compiled or computed)."""
    return jax.eval_shape(functools.partial(model.apply, **kw), variables, x)


def test_model_apply_names_the_layer_the_input_and_the_parameters():
    model, variables = _model("lwls_cnn", 28)
    with pytest.raises(
        ValueError,
        match=r"Conv layer 'conv1': input x of shape \(2, 28, 28, 3\) needs parameter 'kernel' "
        r"of shape \(5, 5, 3, 4\), but the variables hold \(5, 5, 1, 4\)",
    ):
        _trace(model, variables, jnp.zeros((2, 28, 28, 3)))  # wrong channels
    with pytest.raises(ValueError, match=r"Conv layer 'conv1': input x of shape \(28, 28, 1\) needs .* \(5, 1, 4\)"):
        _trace(model, variables, jnp.zeros((28, 28, 1)))  # no batch axis
    with pytest.raises(
        ValueError,
        match=r"Dense layer 'dense1': input x of shape \(2, 768\) needs parameter 'kernel' of shape "
        r"\(768, 200\), but the variables hold \(588, 200\).*after a flatten",
    ):
        _trace(model, variables, jnp.zeros((2, 32, 32, 1)))  # spatial size before the Dense
    other = _model("lenet5", 28)[1]
    with pytest.raises(
        ValueError, match=r"layer 'conv1'.*needs parameter 'kernel' of shape \(5, 5, 1, 4\).*another model"
    ):
        _trace(model, other, jnp.zeros((2, 28, 28, 1)))


def test_training_without_a_key_or_mutable_says_what_to_pass():
    model, variables = _model("lwls_cnn", 28, batch_norm=True, dropout_rate=0.5)
    x = jnp.zeros((2, 28, 28, 1))
    with pytest.raises(
        ValueError, match=r"BatchNorm layer 'bn1' is in training mode .* pass mutable=\['batch_stats'\]"
    ):
        _trace(model, variables, x, train=True, rngs={"dropout": KEY})
    with pytest.raises(
        ValueError,
        match=r"Dropout layer 'dropout' is in training mode \(deterministic=False\) with rate 0.5 "
        r"and needs a PRNG key .* pass rngs=\{'dropout': key\}",
    ):
        _trace(model, variables, x, train=True, mutable=["batch_stats"])
    with pytest.raises(ValueError, match=r"BatchNorm layer 'bn1': the variables have no 'batch_stats'"):
        _trace(model, {"params": variables["params"]}, x)
    run = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    y, updates = run(variables, x, rngs={"dropout": jax.random.key(1)})  # all given: runs
    assert y.shape == (2, 10) and set(updates) == {"batch_stats"}


def test_check_input_compares_the_whole_variable_tree():
    model, variables = _model("lwls_cnn", 28)
    check_input(model, variables, jnp.zeros((5, 28, 28, 1)))  # fine
    with pytest.raises(
        ValueError,
        match=r"variables\['params'\] entry 'dense1/kernel' has shape \(588, 200\), but LWLSCNN "
        r"on input x of shape \(2, 32, 32, 1\) needs \(768, 200\)",
    ):
        check_input(model, variables, jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"x of shape \(28, 28, 1\) \(rank 3\) does not fit LWLSCNN.*use x\[None\]"):
        check_input(model, variables, jnp.zeros((28, 28, 1)))
    mlp, mlp_vars = _model("mlp", 28)
    with pytest.raises(ValueError, match=r"does not match LWLSCNN .* missing \['conv1/bias'.*unexpected \['head/bias'"):
        check_input(model, mlp_vars, jnp.zeros((2, 28, 28, 1)))
    with pytest.raises(ValueError, match=r"x seems to lack its batch axis: pass x\[None\]"):
        check_input(mlp, mlp_vars, jnp.zeros((28, 28, 1)))
    extra = {"params": {**variables["params"], "spare": {"kernel": jnp.zeros(3)}}}
    with pytest.raises(ValueError, match=r"unexpected \['spare/kernel'\]"):  # Flax would ignore it silently
        check_input(model, extra, jnp.zeros((2, 28, 28, 1)))


def test_get_model_options_are_checked_with_the_model_name():
    for kw, exc, pattern in [
        ({"num_classes": 0}, ValueError, r"get_model\('lwls_cnn'\) option num_classes must be >= 1, got 0"),
        ({"num_classes": -3}, ValueError, "option num_classes must be >= 1, got -3"),
        ({"num_classes": "ten"}, TypeError, "option num_classes must be an int, got 'ten'"),
        ({"filters": (4, 0, 12)}, ValueError, r"option filters\[1\] must be >= 1, got 0"),
        ({"dropout_rate": 1.0}, ValueError, r"option dropout_rate must be a finite number in \[0, 1\), got 1.0"),
    ]:
        with pytest.raises(exc, match=pattern):
            get_model("lwls_cnn", **kw)
    with pytest.raises(ValueError, match=r"get_model\('mlp'\) option widths\[0\] must be >= 1, got 0"):
        get_model("mlp", widths=(0,))
    assert get_model("mlp", widths=()).widths == ()  # logistic regression stays allowed


def test_create_train_state_refuses_what_would_fail_later():
    model, variables = _model("lwls_cnn", 28)
    tx, x = make_optimizer("sgd", 0.1), jnp.zeros((1, 28, 28, 1))
    with pytest.raises(TypeError, match=r"tx must be an optax optimizer .* got None"):
        create_train_state(model, None, x)
    with pytest.raises(
        TypeError,
        match=r"tx must be an optax optimizer, got the string 'adam'; build one with "
        r"jaxcnn.train.make_optimizer\('adam', learning_rate\)",
    ):
        create_train_state(model, "adam", x)
    with pytest.raises(TypeError, match="sample_x must be an array, got None"):
        create_train_state(model, tx, None)
    with pytest.raises(ValueError, match=r"sample_x of shape \(28, 28, 1\) \(rank 3\) .* use sample_x\[None\]"):
        create_train_state(model, tx, x[0])
    with pytest.raises(
        ValueError,
        match=r"params entry 'dense1/kernel' has shape \(588, 200\), but LWLSCNN on input x of shape "
        r"\(1, 32, 32, 1\) needs \(768, 200\)",
    ):
        create_train_state(model, tx, jnp.zeros((1, 32, 32, 1)), params=variables["params"])
    with pytest.raises(ValueError, match=r"params does not match LWLSCNN .*variables of another model"):
        create_train_state(model, tx, x, params=_model("mlp", 28)[1]["params"])
    bn_model, bn_vars = _model(
        "mlp", 4, widths=(8,), batch_norm=True
    )  # fine-tuning from params alone: fresh statistics
    state = create_train_state(bn_model, tx, jnp.zeros((1, 4, 4, 1)), params=bn_vars["params"])
    assert jax.tree.structure(state.batch_stats) == jax.tree.structure(bn_vars["batch_stats"])


def test_optimizer_numbers_and_the_trainable_mask():
    for kw, pattern in [
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0, got inf"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0, got nan"),
        ({"b1": 1.5}, r"b1 must be a finite number in \[0, 1\), got 1.5"),
        ({"b2": -0.1}, r"b2 must be a finite number in \[0, 1\), got -0.1"),
        ({"eps": -1e-8}, "eps must be a finite number >= 0"),
    ]:
        lr = kw.pop("learning_rate", 1e-3)
        with pytest.raises(ValueError, match=pattern):
            make_optimizer("adam", lr, **kw)
    assert make_optimizer("adam", np.float32(1e-3)) is not None  # NumPy scalars are numbers too
    params = _model("mlp", 4, widths=(8,))[1]["params"]
    make_optimizer("sgd", 0.1, trainable={"dense1": False, "head": True}).init(params)  # a prefix tree is fine
    with pytest.raises(
        ValueError, match=r"trainable does not match the parameters: no entry for \['head/bias', 'head/kernel'\]"
    ):
        make_optimizer("sgd", 0.1, trainable={"dense1": False}).init(params)
    with pytest.raises(ValueError, match=r"entries that are no parameter: \['conv1'\]"):
        make_optimizer("sgd", 0.1, trainable={"dense1": True, "head": True, "conv1": False}).init(params)
    with pytest.raises(TypeError, match=r"trainable\['head/kernel'\] must be True or False, got 'yes'"):
        make_optimizer("sgd", 0.1, trainable={"dense1": True, "head": {"kernel": "yes", "bias": True}})
    frozen = make_optimizer("sgd", 0.1, trainable={"dense1": False, "head": True})
    updates, _ = frozen.update(jax.tree.map(jnp.ones_like, params), frozen.init(params), params)
    assert not np.any(updates["dense1"]["kernel"]) and np.all(updates["head"]["kernel"] == -0.1)
    assert isinstance(frozen, optax.GradientTransformation)


def test_labels_where_they_enter():
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\), got 10 at position 2"):
        check_labels(np.array([0, 9, 10]), 10)
    with pytest.raises(TypeError, match="y must hold integer class indices"):
        check_labels(np.array([0.0, 1.0]), 10)
    with pytest.raises(TypeError, match="check them on the host"):
        jax.jit(lambda y: check_labels(y, 10))(jnp.zeros(2, jnp.int32))
    assert bool(jax.jit(labels_in_range, static_argnums=1)(jnp.array([0, 9]), 10))
    assert not bool(jax.jit(labels_in_range, static_argnums=1)(jnp.array([0, -1]), 10))
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\), got -1 at position 1"):
        D.batches(np.zeros((3, 2)), np.array([0, -1, 2]), 1, num_classes=3)
    with pytest.raises(ValueError, match=r"batch must have the keys \['x', 'y'\]; 'y' missing, got keys \['x'\]"):
        check_batch({"x": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"var must be >= 0 everywhere \(a variance\), got -0.5 at index 1"):
        F.batch_norm(jnp.ones((2, 3)), jnp.zeros(3), jnp.array([1.0, -0.5, 1.0]), training=False)
    y, _ = jax.jit(lambda v: F.batch_norm(jnp.ones((2, 3)), jnp.zeros(3), v, training=False))(jnp.ones(3))
    assert y.shape == (2, 3)  # traced statistics are not read back (no host sync inside jit)


def test_finite_checks_name_the_first_bad_leaf():
    tree = {"params": {"a": np.ones(3, np.float32), "b": np.array([[1.0, np.inf]], np.float32)}, "step": np.int32(3)}
    assert first_nonfinite(tree) == "params/b (an infinity at (0, 1))"
    assert first_nonfinite({"w": jnp.ones(2, jnp.bfloat16)}) is None
    with pytest.raises(FloatingPointError, match=r"state holds non-finite values: params/b"):
        check_finite(tree)
