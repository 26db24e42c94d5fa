"""from_torch_module on user-style CNNs (1-D, 2-D with ceil_mode pooling, 3-D), and compare naming the layer that parts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import interop_torch_models as tm

from jaxcnn.interop.torch import compare, from_torch, from_torch_module, layout
from jaxcnn.models import get_model


def _randomize(net):
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            tm.randomize_bn(m)
    return net


def cnn1d():
    return nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2, padding_mode="reflect"),
        nn.BatchNorm1d(8),
        nn.LeakyReLU(0.2),
        nn.MaxPool1d(3, 2, padding=1, dilation=1, ceil_mode=True),
        nn.Conv1d(8, 8, 3, dilation=2, groups=2),
        nn.ELU(0.5),
        nn.Dropout1d(0.3),
        nn.AvgPool1d(2, count_include_pad=False, padding=1),
        nn.AdaptiveMaxPool1d(4),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.GELU(approximate="tanh"),
        nn.Dropout(0.5),
        nn.Linear(16, 5),
    )


def cnn2d():
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8, momentum=0.2), nn.ReLU(inplace=True)),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(8, 12, (3, 2), stride=(1, 2), padding=(1, 0), bias=False),
        nn.ReLU6(),
        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1, output_padding=1),
        nn.SiLU(),
        nn.Dropout2d(0.1),
        nn.MaxPool2d(2, 2, ceil_mode=True, dilation=1),
        nn.AdaptiveAvgPool2d((3, None)),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 10),
        nn.Tanh(),
        nn.Linear(10, 4),
    )


def cnn3d():
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.Hardtanh(-0.5, 0.5),
        nn.MaxPool3d((2, 2, 1), ceil_mode=True),
        nn.Conv3d(4, 6, (1, 3, 3), stride=(1, 2, 1), padding=(0, 1, 1)),
        nn.Sigmoid(),
        nn.ConvTranspose3d(6, 3, 2, stride=1, groups=3),
        nn.Dropout3d(0.2),
        nn.AvgPool3d(2, ceil_mode=True, divisor_override=3),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    )


NETS = {"1d": (cnn1d, (3, 2, 21)), "2d": (cnn2d, (2, 3, 15, 17)), "3d": (cnn3d, (2, 1, 7, 9, 6))}


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("channels_first", [False, True])
def test_from_torch_module_matches_torch(kind, channels_first):
    make, shape = NETS[kind]
    torch.manual_seed(0)
    net = _randomize(make()).eval()
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    model, variables = from_torch_module(net, channels_first=channels_first)
    out = model.apply(variables, jnp.asarray(x if channels_first else layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)
    assert str(compare(net, model, variables, x)).endswith("all layers agree")


def test_from_torch_module_training_step_matches_torch():
    """One SGD step in training mode (dropout off): BN statistics with PyTorch's momentum convention."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.BatchNorm2d(6, momentum=0.3),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3),
    )
    _randomize(net).train()
    x = np.random.default_rng(1).normal(size=(4, 3, 9, 9)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    model, v = from_torch_module(net)

    def loss_fn(params):
        logits, upd = model.apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            jnp.asarray(layout.channels_last(x)),
            train=True,
            mutable=["batch_stats"],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean(), upd

    (_, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(v["params"])
    params = jax.tree.map(lambda p, d: p - 0.5 * d, v["params"], g)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    opt.step()
    _, after = from_torch_module(net)
    assert (
        max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(after["params"])))
        < 1e-5
    )
    bn = upd["batch_stats"]["layers_1"]
    np.testing.assert_allclose(bn["mean"], after["batch_stats"]["layers_1"]["mean"], atol=1e-6)
    torch_var = layout.torch_running_var(bn["var"], v["batch_stats"]["layers_1"]["var"], 0.7, 4 * 7 * 7)
    np.testing.assert_allclose(torch_var, after["batch_stats"]["layers_1"]["var"], rtol=1e-5)


def test_unsupported_layers_are_named_with_their_position():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.LSTM(4, 4)))
    with pytest.raises(ValueError, match=r"layer 2 \(1\.1: LSTM\): LSTM is not supported by from_torch_module"):
        from_torch_module(net)
    with pytest.raises(ValueError, match=r"layer 0 \(0: MaxPool2d\): MaxPool2d\(return_indices=True\)"):
        from_torch_module(nn.Sequential(nn.MaxPool2d(2, return_indices=True)))
    with pytest.raises(ValueError, match="momentum=None"):
        from_torch_module(nn.Sequential(nn.BatchNorm2d(2, momentum=None)))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=2"):
        from_torch_module(nn.Sequential(nn.Flatten(2)))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        from_torch_module([nn.ReLU()])


def test_compare_names_the_perturbed_layer():
    torch.manual_seed(0)
    net = _randomize(cnn2d()).eval()
    x = np.random.default_rng(0).normal(size=NETS["2d"][1]).astype(np.float32)
    model, variables = from_torch_module(net)
    bad = jax.tree.map(lambda a: a, variables)
    bad["params"]["layers_4"]["kernel"] = bad["params"]["layers_4"]["kernel"] * 1.01  # the second conv, "2"
    report = compare(net, model, bad, x)
    first = report.first_divergence
    assert (first.jax_name, first.torch_name) == ("layers_4", "2")
    assert all(r.ok for r in report.rows[: [r.jax_name for r in report.rows].index("layers_4")])
    assert "first divergence: layers_4 (PyTorch 2)" in str(report) and "DIFFERS" in str(report)


def test_compare_on_a_zoo_model_names_the_torchvision_layer():
    torch.manual_seed(0)
    tnet = tm.VGG(tm.VGG_A[:4], True, num_classes=3, hidden=8, pool_size=2).eval()  # 64, M, 128, M
    kw = {"config": (64, "M", 128, "M"), "num_classes": 3, "hidden": 8, "pool_size": 2, "batch_norm": True}
    variables = from_torch(get_model("vgg11_bn", **kw), tnet.state_dict())
    variables["batch_stats"]["bn2_1"]["mean"] = variables["batch_stats"]["bn2_1"]["mean"] + 0.05
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    report = compare(tnet, get_model("vgg11_bn", **kw), variables, x)
    assert (report.first_divergence.jax_name, report.first_divergence.torch_name) == ("bn2_1", "features.5")
    assert [r.torch_name for r in report.rows[:3]] == ["features.0", "features.1", "features.4"]
