"""Strict-mode reports, non-strict loading, checkpoint files (.pt, .safetensors), the layout rules, torch missing."""

from __future__ import annotations

import sys

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import interop_torch_models as tm

from jaxcnn.interop.torch import (
    CheckpointError,
    StateDictMismatchError,
    TorchNotInstalledError,
    from_torch,
    layout,
    load_state_dict,
    load_variables,
    load_weights,
    save_state_dict,
    to_torch,
)
from jaxcnn.models import get_model
from jaxcnn.nn import BatchNorm, Conv, ConvTranspose, Flatten


@pytest.fixture(scope="module")
def lenet_sd():
    torch.manual_seed(0)
    return tm.LeNet5().state_dict()


def test_strict_reports_every_missing_unexpected_and_mismatched_key_at_once(lenet_sd):
    sd = dict(lenet_sd)
    del sd["conv2.bias"], sd["fc3.weight"]
    sd["fc1.weight"] = torch.zeros(120, 399)
    sd["extra.weight"] = torch.zeros(3)
    sd["bn.num_batches_tracked"] = torch.tensor(5)  # ignored, never "unexpected"
    with pytest.raises(StateDictMismatchError) as info:
        from_torch("lenet5", sd)
    msg, rep = str(info.value), info.value.report
    assert "2 missing, 1 unexpected, 1 with the wrong shape" in msg
    for text in (
        "missing key: conv2.bias (params/conv2/bias",
        "missing key: fc3.weight (params/head/kernel",
        "unexpected key: extra.weight",
        "shape mismatch: fc1.weight: got (120, 399), expected (120, 400)",
    ):
        assert text in msg
    assert len(rep.missing) == 2 and rep.unexpected == ("extra.weight",) and len(rep.mismatched) == 1


def test_strict_mismatch_names_the_shapes_for_torchvision_alexnet_widths():
    torch.manual_seed(0)
    sd = tm.AlexNet(num_classes=10, hidden=64).state_dict()  # torchvision widths 64, 192, 384, 256, 256
    with pytest.raises(
        StateDictMismatchError, match=r"features.0.weight: got \(64, 3, 11, 11\), expected \(96, 3, 11, 11\)"
    ):
        from_torch("alexnet", sd, model_kwargs={"num_classes": 10, "hidden": 64})
    with pytest.raises(
        StateDictMismatchError, match=r"hint: .*model_kwargs=\{'channels': \(64, 192, 384, 256, 256\)\}"
    ):
        from_torch("alexnet", sd, model_kwargs={"num_classes": 10, "hidden": 64})
    variables = from_torch(
        "alexnet", sd, model_kwargs={"num_classes": 10, "hidden": 64, "channels": (64, 192, 384, 256, 256)}
    )
    assert variables["params"]["conv1"]["kernel"].shape == (11, 11, 3, 64)
    with pytest.raises(StateDictMismatchError) as info:  # another mismatch (the head): no AlexNet hint
        from_torch("alexnet", sd, model_kwargs={"num_classes": 5, "hidden": 64, "channels": (64, 192, 384, 256, 256)})
    assert "hint" not in str(info.value) and "classifier.6.weight" in str(info.value)


def test_non_strict_returns_what_it_did_not_load_and_keeps_given_variables(lenet_sd):
    model = get_model("lenet5", num_classes=5)
    base = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    sd = dict(lenet_sd)
    del sd["conv1.bias"]
    variables, rep = from_torch("lenet5", sd, strict=False, model_kwargs={"num_classes": 5}, variables=base)
    assert [m.split(" ")[0] for m in rep.missing] == ["conv1.bias"]
    assert {m.split(":")[0] for m in rep.mismatched} == {"fc3.weight", "fc3.bias"}  # the new 5-class head
    assert not rep.unexpected
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], base["params"]["head"]["kernel"])
    np.testing.assert_array_equal(variables["params"]["conv1"]["bias"], base["params"]["conv1"]["bias"])
    np.testing.assert_array_equal(variables["params"]["dense2"]["kernel"], sd["fc2.weight"].numpy().T)
    assert model.apply(variables, jnp.ones((2, 28, 28, 1))).shape == (2, 5)
    partial, rep2 = from_torch("lenet5", sd, strict=False, model_kwargs={"num_classes": 5})
    assert "bias" not in partial["params"]["conv1"] and "head" not in partial["params"] and rep2 == rep


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        from_torch("lenet5", [1, 2])
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        from_torch("resnet19", {})
    with pytest.raises(TypeError, match="name_or_model must be"):
        from_torch(3, {})
    with pytest.raises(ValueError, match="input_shape is needed for Conv"):
        from_torch(Conv(4, 3), {})
    with pytest.raises(TypeError, match="mapping must be None, a dict or a function"):
        from_torch("lenet5", {}, mapping=3)
    with pytest.raises(TypeError, match="strict must be True or False"):
        from_torch("lenet5", {}, strict="yes")
    with pytest.raises(TypeError, match="variables must be a dict with a 'params'"):
        to_torch("lenet5", {"w": 1})


class _UserNet(fnn.Module):
    @fnn.compact
    def __call__(self, x, *, train=False):
        x = Conv(4, 3, padding=1, name="stem")(x)
        x = BatchNorm(use_running_average=not train, name="norm")(x)
        x = ConvTranspose(2, 2, strides=2, name="up")(x)
        return fnn.Dense(3, name="out")(Flatten()(x))


class _TorchUserNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
        self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.head = torch.nn.Linear(2 * 6 * 6, 3)
        tm.randomize_bn(self.body[1])

    def forward(self, x):
        return self.head(torch.flatten(self.up(self.body(x)), 1))


@pytest.mark.parametrize("as_dict", [True, False])
def test_generic_converter_with_a_mapping(as_dict):
    torch.manual_seed(0)
    tnet = _TorchUserNet().eval()
    table = {"stem": "body.0", "norm": "body.1", "up": "up", "out": "head"}
    mapping = table if as_dict else table.get
    variables = from_torch(_UserNet(), tnet.state_dict(), mapping=mapping, input_shape=(1, 3, 3, 1))
    x = np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tnet(torch.from_numpy(x)).numpy()
    out = _UserNet().apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)
    back = to_torch(_UserNet(), variables, mapping=mapping, input_shape=(1, 3, 3, 1))
    assert all(torch.equal(back[k], v) for k, v in tnet.state_dict().items() if "num_batches" not in k)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_load_files_written_by_the_test(tmp_path, lenet_sd, suffix):
    path = tmp_path / f"lenet{suffix}"
    if suffix == ".safetensors":
        save_state_dict(lenet_sd, path)
    else:
        torch.save({"state_dict": lenet_sd, "epoch": 3} if suffix == ".pth" else lenet_sd, path)
    sd = load_state_dict(path)
    assert sorted(sd) == sorted(lenet_sd) and all(np.array_equal(sd[k], v.numpy()) for k, v in lenet_sd.items())
    expected = from_torch("lenet5", lenet_sd)
    for got in (load_weights(path, "lenet5"), load_variables(str(path), "lenet5", {})):
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got, expected))
    # fine-tuning with a new head: the CLI's --init-from with another num_classes
    init = get_model("lenet5", num_classes=3).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    tuned, report = load_variables(path, "lenet5", {"num_classes": 3}, strict=False, variables=init)
    assert {m.split(":")[0] for m in report.mismatched} == {"fc3.weight", "fc3.bias"}
    np.testing.assert_array_equal(tuned["params"]["head"]["bias"], init["params"]["head"]["bias"])
    np.testing.assert_array_equal(tuned["params"]["conv1"]["bias"], lenet_sd["conv1.bias"].numpy())


def test_safetensors_load_without_torch(tmp_path, lenet_sd, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_state_dict(lenet_sd, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now fails
    assert load_variables(path, "lenet5")["params"]["conv1"]["kernel"].shape == (5, 5, 1, 6)
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(TorchNotInstalledError, match=r"pip install jaxcnn\[torch\]") as info:
        load_state_dict(tmp_path / "w.pt")
    assert isinstance(info.value, ImportError)
    with pytest.raises(TorchNotInstalledError, match="to_torch"):
        to_torch("lenet5", from_torch("lenet5", lenet_sd))


def test_missing_and_corrupt_files_give_clear_errors(tmp_path, lenet_sd):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_state_dict(tmp_path)
    for name in ("bad.pt", "bad.safetensors"):
        (tmp_path / name).write_bytes(b"\x00not a checkpoint at all")
        with pytest.raises(CheckpointError, match="not a readable"):
            load_state_dict(tmp_path / name)
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="has suffix '.npz'"):
        load_state_dict(tmp_path / "w.npz")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds list, not a state_dict"):
        load_state_dict(tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="not of name -> tensor"):
        load_state_dict(tmp_path / "d.pt")
    good = tmp_path / "good.pt"
    torch.save(lenet_sd, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(tmp_path / "cut.pt")


def test_layout_rules_against_torch_ops():
    rng = np.random.default_rng(0)
    # conv: torch conv2d with weight w equals jaxcnn conv with conv_from_torch(w)
    import jaxcnn.functional as F

    w = rng.normal(size=(6, 2, 3, 2)).astype(np.float32)  # groups=2: (O, I/g, kh, kw)
    x = rng.normal(size=(1, 4, 5, 6)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=2).numpy()
    out = F.conv(layout.channels_last(x), layout.conv_from_torch(w), padding="VALID", groups=2)
    np.testing.assert_allclose(np.asarray(out), layout.channels_last(ref), atol=1e-5)
    np.testing.assert_array_equal(layout.conv_to_torch(layout.conv_from_torch(w)), w)
    # transposed conv, groups and stride
    wt = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)  # (C_y, F/g, kh, kw), groups=2 -> F = 6
    y = rng.normal(size=(1, 4, 3, 4)).astype(np.float32)
    ref = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(y), torch.from_numpy(wt), stride=2, padding=1, output_padding=1, groups=2
    ).numpy()
    out = F.conv_transpose(
        layout.channels_last(y), layout.conv_transpose_from_torch(wt), strides=2, padding=1, output_padding=1, groups=2
    )
    np.testing.assert_allclose(np.asarray(out), layout.channels_last(ref), atol=1e-5)
    # dense after a flatten of a (C=3, H=2, W=4) map
    wd = rng.normal(size=(5, 24)).astype(np.float32)
    m = rng.normal(size=(2, 3, 2, 4)).astype(np.float32)
    ref = m.reshape(2, -1) @ wd.T
    ours = layout.channels_last(m).reshape(2, -1) @ layout.dense_from_torch(wd, (2, 4, 3))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_array_equal(layout.dense_to_torch(layout.dense_from_torch(wd, (2, 4, 3)), (2, 4, 3)), wd)
    assert layout.momentum_from_torch(0.1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="momentum=None"):
        layout.momentum_from_torch(None)


def test_torch_running_var_is_pytorchs_update():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    bn = torch.nn.BatchNorm2d(3).train()
    old = bn.running_var.clone().numpy()
    bn(torch.from_numpy(x))
    biased = x.var(axis=(0, 2, 3))
    ours = 0.9 * old + 0.1 * biased  # jaxcnn's update
    np.testing.assert_allclose(layout.torch_running_var(ours, old, 0.9, 100), bn.running_var.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="count must be >= 2"):
        layout.torch_running_var(ours, old, 0.9, 1)
