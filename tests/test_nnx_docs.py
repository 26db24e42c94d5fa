"""docs/nnx.md: its python blocks run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "nnx.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_doc_has_the_side_by_side_cnn_and_the_plain_nnx_loop():
    text = "\n".join(blocks())
    assert "class LinenCNN(nn.Module)" in text and "class NNXCNN(nnx.Module)" in text
    assert "nnx.Optimizer(" in text and "@nnx.jit" in text and "as_linen_like" in text


def test_every_python_block_of_the_doc_runs(capsys):
    namespace: dict = {}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"docs/nnx.md block {i}", "exec"), namespace)  # noqa: S102 -- running the doc is the test
    out = capsys.readouterr().out
    assert "(4, 10) (4, 10)" in out and "122270" in out and "Conv (5, 5, 1, 4)" in out
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert accuracy > 0.5, out
