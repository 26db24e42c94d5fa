"""The porting guide's worked example runs (its python blocks, in order, in one namespace); experiment 15's --init-from."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "porting_from_pytorch.md"


@pytest.mark.slow
def test_porting_guide_worked_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "porting_guide"}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)  # noqa: S102 - the guide's own code
    assert "all layers agree" in capsys.readouterr().out


def test_transfer_experiment_starts_from_a_converted_checkpoint(tmp_path):
    exp = importlib.import_module("experiments.15_transfer_learning")
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("conv1", torch.nn.Conv2d(1, 4, 5, padding=2))
    net.add_module("conv2", torch.nn.Conv2d(4, 8, 5, stride=2))  # jaxcnn's SAME pads (1, 2) here: padded below
    net.add_module("conv3", torch.nn.Conv2d(8, 12, 4, stride=2, padding=1))
    net.add_module("dense1", torch.nn.Linear(12 * 7 * 7, 200))
    net.add_module("dense2", torch.nn.Linear(200, 10))
    path = tmp_path / "lwls.pt"
    torch.save(net.state_dict(), path)
    params = exp.converted_params(str(path))
    assert params["conv1"]["kernel"].shape == (5, 5, 1, 4) and params["dense1"]["kernel"].shape == (588, 200)
    x = torch.randn(2, 1, 28, 28)
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.models import get_model

    def torch_forward(t):
        t = torch.relu(net.conv1(t))
        t = torch.relu(net.conv2(torch.nn.functional.pad(t, (1, 2, 1, 2))))
        t = torch.relu(net.conv3(t))
        return net.dense2(torch.relu(net.dense1(torch.flatten(t, 1))))

    with torch.no_grad():
        ref = torch_forward(x).numpy()
    out = get_model("lwls_cnn").apply({"params": params}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)
    with pytest.raises(SystemExit):
        exp.cli(["--init-from", str(tmp_path / "missing.pt"), "--quick", "--out-dir", str(tmp_path)])
