"""Losses, optimizers and schedules against PyTorch and hand formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn.train import accuracy, cross_entropy, get_loss, make_optimizer, make_schedule, mse, top_k_accuracy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_torch(rng, smoothing):
    logits = rng.standard_normal((16, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 7, 16)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), reduction="none", label_smoothing=smoothing
    ).numpy()
    np.testing.assert_allclose(
        cross_entropy(logits, jnp.asarray(labels, jnp.int32), label_smoothing=smoothing), ref, rtol=1e-5, atol=1e-6
    )


def test_cross_entropy_averages_extra_axes_per_example(rng):
    logits = rng.standard_normal((3, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 5)).astype(np.int32)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits).permute(0, 2, 1), torch.tensor(labels).long(), reduction="none"
    )
    np.testing.assert_allclose(cross_entropy(logits, labels), ref.numpy().mean(axis=1), rtol=1e-5)


def test_mse_for_labels_and_regression(rng):
    out = rng.standard_normal((6, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2, 0], np.int32)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(mse(out, labels), ((out - onehot) ** 2).mean(axis=1), rtol=1e-6)
    target = rng.standard_normal((6, 9, 1)).astype(np.float32)
    pred = rng.standard_normal((6, 9, 1)).astype(np.float32)
    np.testing.assert_allclose(mse(pred, target), ((pred - target) ** 2).reshape(6, -1).mean(axis=1), rtol=1e-6)


def test_accuracy_and_top_k_match_torch(rng):
    logits = rng.standard_normal((50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50).astype(np.int32)
    np.testing.assert_array_equal(accuracy(logits, labels), (logits.argmax(1) == labels).astype(np.float32))
    for k in (1, 3, 5):
        top = torch.topk(torch.tensor(logits), k, dim=1).indices.numpy()
        ref = (top == labels[:, None]).any(axis=1).astype(np.float32)
        np.testing.assert_array_equal(top_k_accuracy(logits, labels, k), ref)


def test_loss_errors():
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"labels must have shape logits.shape\[:-1\] = \(2,\), got \(3,\)"):
        cross_entropy(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="label_smoothing must be a number in"):
        cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), label_smoothing=2.0)
    with pytest.raises(ValueError, match="k must be in \\[1, 3\\]"):
        top_k_accuracy(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), 4)
    with pytest.raises(ValueError, match="loss must be one of 'cross_entropy', 'mse', got 'hinge'"):
        get_loss("hinge")


# optimizer name -> (our kwargs, torch constructor)
TORCH_OPTIMIZERS = {
    "sgd": ({}, lambda p, lr: torch.optim.SGD(p, lr)),
    "momentum": ({"momentum": 0.8}, lambda p, lr: torch.optim.SGD(p, lr, momentum=0.8)),
    "nesterov": ({"momentum": 0.8}, lambda p, lr: torch.optim.SGD(p, lr, momentum=0.8, nesterov=True)),
    "adam": ({}, lambda p, lr: torch.optim.Adam(p, lr)),
    "adamw": ({"weight_decay": 0.05}, lambda p, lr: torch.optim.AdamW(p, lr, weight_decay=0.05)),
    # optax's defaults differ from torch's; the factory passes these through to optax
    "adagrad": ({"initial_accumulator_value": 0.0, "eps": 1e-10}, lambda p, lr: torch.optim.Adagrad(p, lr, eps=1e-10)),
    "rmsprop": (
        {"decay": 0.99, "eps": 1e-8, "eps_in_sqrt": False},
        lambda p, lr: torch.optim.RMSprop(p, lr, alpha=0.99, eps=1e-8),
    ),
    "sgd+l2": ({"weight_decay": 0.1}, lambda p, lr: torch.optim.SGD(p, lr, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", sorted(TORCH_OPTIMIZERS))
def test_optimizers_match_torch_on_a_quadratic(rng, name):
    kwargs, torch_opt = TORCH_OPTIMIZERS[name]
    a = rng.standard_normal((5, 5)).astype(np.float64)
    a = a @ a.T / 5 + np.eye(5)
    w0 = rng.standard_normal(5)
    lr = 0.05

    at = torch.tensor(a)

    def loss(w):
        return 0.5 * w @ at @ w + w.sum()

    wt = torch.tensor(w0.copy(), requires_grad=True)
    opt = torch_opt([wt], lr)
    for _ in range(8):
        opt.zero_grad()
        loss(wt).backward()
        opt.step()

    tx = make_optimizer(name.split("+")[0], lr, **kwargs)
    with jax.enable_x64(True):
        w = jnp.asarray(w0)
        state = tx.init(w)
        for _ in range(8):
            g = jax.grad(lambda w: 0.5 * w @ jnp.asarray(a) @ w + w.sum())(w)
            updates, state = tx.update(g, state, w)
            w = optax.apply_updates(w, updates)
        np.testing.assert_allclose(np.asarray(w), wt.detach().numpy(), rtol=1e-9, atol=1e-10)


def test_clipping_then_optimizer():
    tx = make_optimizer("sgd", 1.0, clip_norm=1.0)
    g = {"a": jnp.array([3.0, 4.0])}  # norm 5 -> clipped to norm 1
    updates, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(updates["a"], [-0.6, -0.8], rtol=1e-6)


def test_freeze_mask_gives_zero_updates():
    params = {"features": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
    trainable = {"features": {"w": False}, "head": {"w": True}}
    tx = make_optimizer("adam", 0.1, trainable=trainable)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["features"]["w"], 0.0)
    assert np.all(np.asarray(updates["head"]["w"]) < 0)


def test_schedules_by_hand():
    assert make_schedule("constant", 0.1)(1000) == pytest.approx(0.1)
    cos = make_schedule("cosine", 0.2, total_steps=100)
    assert float(cos(0)) == pytest.approx(0.2)
    assert float(cos(50)) == pytest.approx(0.1, rel=1e-5)  # lr/2 (1 + cos(pi/2))
    assert float(cos(25)) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)), rel=1e-5)
    warm = make_schedule("warmup_cosine", 1.0, total_steps=110, warmup_steps=10)
    assert float(warm(5)) == pytest.approx(0.5)
    assert float(warm(10)) == pytest.approx(1.0)
    assert float(warm(60)) == pytest.approx(0.5, rel=1e-5)
    step = make_schedule("step", 1.0, decay_steps=30, decay_rate=0.1)
    assert [float(step(t)) for t in (0, 29, 30, 61)] == pytest.approx([1.0, 1.0, 0.1, 0.01])


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: make_optimizer("adamax", 0.1), ValueError, "optimizer must be one of 'sgd'.*got 'adamax'"),
        (lambda: make_optimizer("sgd", -1.0), ValueError, r"learning_rate must be a finite number > 0, got -1\.0"),
        (lambda: make_optimizer("sgd", "fast"), TypeError, "learning_rate must be a finite number > 0, got 'fast'"),
        (
            lambda: make_optimizer("adam", 0.1, weight_decay=-1.0),
            ValueError,
            "weight_decay must be a finite number >= 0",
        ),
        (lambda: make_optimizer("adam", 0.1, bogus=1), TypeError, r"optimizer 'adam' does not accept \['bogus'\]"),
        (lambda: make_schedule("cosine", 0.1), ValueError, "schedule='cosine' needs total_steps"),
        (lambda: make_schedule("linear", 0.1), ValueError, "schedule must be one of"),
        (
            lambda: make_schedule("warmup_cosine", 0.1, total_steps=10, warmup_steps=10),
            ValueError,
            r"warmup_steps must be in \[0, total_steps=10\)",
        ),
    ],
)
def test_optimizer_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_learning_rate_can_be_injected_without_recompiling(rng):
    """make_optimizer accepts an array learning rate, so optax.inject_hyperparams can wrap it;
    the updates equal the plain optimizer's (optax as the oracle)."""
    params = {"w": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    grads = {"w": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    tx = optax.inject_hyperparams(lambda learning_rate: make_optimizer("adam", learning_rate))(learning_rate=0.01)
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    ref, _ = optax.adam(0.01).update(grads, optax.adam(0.01).init(params), params)
    np.testing.assert_allclose(updates["w"], ref["w"], rtol=1e-6)
    state.hyperparams["learning_rate"] = jnp.asarray(0.001)
    updates, _ = tx.update(grads, state, params)
    ref, _ = optax.adam(0.001).update(grads, optax.adam(0.001).init(params), params)
    np.testing.assert_allclose(updates["w"], ref["w"], rtol=1e-6)


def test_model_init_is_compiled_once_per_model():
    import jaxcnn
    from jaxcnn.train.state import _init_fn

    assert _init_fn(jaxcnn.get_model("lwls_cnn")) is _init_fn(jaxcnn.get_model("lwls_cnn"))
    assert _init_fn(jaxcnn.get_model("lwls_cnn")) is not _init_fn(jaxcnn.get_model("lwls_cnn", hidden=100))
