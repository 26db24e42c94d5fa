"""Zoo models converted from PyTorch models with torchvision's names: equal outputs, equal after one SGD step, exact round trips."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

import interop_round_trip as rt
import interop_torch_models as tm

from jaxcnn.interop.torch import from_torch, layout, to_torch
from jaxcnn.interop.torch.structure import trace
from jaxcnn.models import get_model

TOL = 1e-4

# name, jaxcnn options, PyTorch model factory, input (N, C, H, W)
CASES = {
    "resnet18": ({"num_classes": 10}, lambda: tm.resnet18(num_classes=10), (2, 3, 32, 32)),
    "vgg11_bn": (
        {"num_classes": 10, "hidden": 64, "pool_size": 2},
        lambda: tm.VGG(tm.VGG_A, True, num_classes=10, hidden=64, pool_size=2, dropout=0.0),
        (2, 3, 64, 64),
    ),
    "alexnet": (
        {"num_classes": 10, "width": 0.25, "hidden": 1024, "dropout_rate": 0.0},  # hidden 1024 * 0.25
        lambda: tm.AlexNet(10, widths=(24, 64, 96, 96, 64), hidden=256, dropout=0.0),
        (2, 3, 224, 224),
    ),
    "lenet5": ({}, lambda: tm.LeNet5(), (2, 1, 28, 28)),
}


def _setup(name, seed=0):
    kw, make, shape = CASES[name]
    torch.manual_seed(seed)
    tmod = make()
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return kw, tmod, x


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(w, np.float64))))
        for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("name", list(CASES))
def test_eval_outputs_match_torch(name):
    kw, tmod, x = _setup(name)
    tmod.eval()
    variables = from_torch(name, tmod.state_dict(), model_kwargs=kw)
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model(name, **kw).apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=TOL, rtol=TOL)
    assert np.abs(ref).max() > 1e-2  # not a trivially small output


@pytest.mark.slow
def test_resnet50_eval_outputs_match_torch():
    torch.manual_seed(0)
    tmod = tm.resnet50(num_classes=10).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    variables = from_torch("resnet50", tmod.state_dict(), model_kwargs={"num_classes": 10})
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model("resnet50", num_classes=10).apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=TOL, rtol=TOL)


def _bn_counts(model, x_shape):
    """BatchNorm path -> values per channel in the batch (N * prod(spatial)), from a trace at the real input size."""
    return {c.path: math.prod(c.in_shape[:-1]) for c in trace(model, x_shape).calls if c.kind == "BatchNorm"}


def _one_step(name, kw, tmod, x, lr=0.1):
    y = np.arange(x.shape[0]) % 3
    variables = from_torch(name, tmod.state_dict(), model_kwargs=kw)
    model = get_model(name, **kw)
    xj = jnp.asarray(layout.channels_last(x))
    stats = variables.get("batch_stats", {})

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": stats}, xj, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean(), updates

    (loss, updates), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    params = jax.tree.map(lambda p, g: p - lr * g, variables["params"], grads)  # plain SGD, as torch.optim.SGD

    tmod.train()
    opt = torch.optim.SGD(tmod.parameters(), lr=lr)
    opt.zero_grad()
    t_loss = torch.nn.functional.cross_entropy(tmod(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()
    opt.step()
    after = from_torch(name, tmod.state_dict(), model_kwargs=kw)
    return model, xj, variables, params, updates.get("batch_stats", {}), after, float(loss), float(t_loss.detach())


# the training step at a smaller size: ResNet-18 at width 16 (same modules and keys), VGG-11-BN on 32x32
STEP_CASES = {
    "resnet18": ({"num_classes": 10, "width": 16}, lambda: tm.resnet18(num_classes=10, width=16), (4, 3, 32, 32)),
    "vgg11_bn": (
        {"num_classes": 10, "hidden": 32, "pool_size": 1, "dropout_rate": 0.0},
        lambda: tm.VGG(tm.VGG_A, True, num_classes=10, hidden=32, pool_size=1, dropout=0.0),
        (4, 3, 32, 32),
    ),
    "alexnet": CASES["alexnet"],
}
SLOW_STEPS = ("vgg11_bn",)  # keep the default suite fast: ResNet-18 and AlexNet run by default


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_STEPS else n for n in STEP_CASES]
)
def test_one_sgd_step_matches_torch(name):
    kw, make, shape = STEP_CASES[name]
    torch.manual_seed(1)
    tmod = make()
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model, xj, before, params, new_stats, after, loss, t_loss = _one_step(name, kw, tmod, x)
    assert abs(loss - t_loss) < TOL
    assert _max_diff(params, after["params"]) < TOL
    assert _max_diff(params, before["params"]) > 1e-4  # the step moved the weights
    if not new_stats:
        return
    counts = _bn_counts(model, xj.shape)
    for path, count in counts.items():
        keys = path.split("/")
        ours, old, theirs = (
            jax.tree_util.tree_reduce(lambda a, k: a[k], keys, t)
            for t in (new_stats, before["batch_stats"], after["batch_stats"])
        )
        np.testing.assert_allclose(np.asarray(ours["mean"]), np.asarray(theirs["mean"]), atol=TOL, rtol=TOL)
        # PyTorch updates the running variance with the unbiased batch variance, jaxcnn with the biased one
        expected = layout.torch_running_var(ours["var"], old["var"], 0.9, count)
        np.testing.assert_allclose(expected, np.asarray(theirs["var"]), atol=TOL, rtol=TOL)
        assert not np.allclose(np.asarray(ours["var"]), np.asarray(theirs["var"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips_are_exact(name):
    kw, tmod, _ = _setup(name)
    sd = tmod.state_dict()
    variables = from_torch(name, sd, model_kwargs=kw)
    back = to_torch(name, variables, model_kwargs=kw)
    rt.assert_state_dict_equal(back, sd, 0)
    rt.assert_trees_equal(variables, from_torch(name, back, model_kwargs=kw))
    _, c, h, w = CASES[name][2]
    rt.assert_jaxcnn_torch_jaxcnn_exact(name, kw, tmod, (1, h, w, c))


@pytest.mark.parametrize(
    "name,kw,make",
    [
        ("resnet34", {}, lambda: tm.ResNet(tm.BasicBlock, [3, 4, 6, 3])),
        ("resnet50", {}, lambda: tm.resnet50()),
        ("vgg11", {"hidden": 8, "pool_size": 1}, lambda: tm.VGG(tm.VGG_A, False, hidden=8, pool_size=1)),
        ("vgg16", {"hidden": 8, "pool_size": 1}, lambda: tm.VGG(VGG_D, False, hidden=8, pool_size=1)),
        ("vgg16_bn", {"hidden": 8, "pool_size": 1}, lambda: tm.VGG(VGG_D, True, hidden=8, pool_size=1)),
    ],
)
def test_zoo_mapping_names_every_torchvision_key_with_its_shape(name, kw, make):
    """Every key and shape of the torchvision-named model, and nothing else (no forward pass needed)."""
    from jaxcnn.interop.torch.convert import _path_mapping, plan

    sd = make().state_dict()
    model = get_model(name, **kw)
    structure = trace(model, (1, 224, 224, 3))
    leaves = plan(structure, _path_mapping(model, None))
    assert {leaf.torch_key for leaf in leaves} == {k for k in sd if not k.endswith("num_batches_tracked")}
    for leaf in leaves:
        node = structure.shapes
        for k in [leaf.collection, *leaf.path.split("/"), leaf.name]:
            node = node[k]
        assert leaf.rule.torch_shape(tuple(node.shape)) == tuple(sd[leaf.torch_key].shape), leaf.torch_key


VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
