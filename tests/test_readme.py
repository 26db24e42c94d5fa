"""The README's Python snippets run as written, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if not b.lstrip().startswith(">>>")]  # transcripts of errors are not scripts


def test_readme_has_snippets():
    assert len(_python_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_snippet_runs(index):
    namespace: dict = {}
    code = "".join(_python_blocks()[: index + 1])  # later snippets build on earlier ones
    exec(compile(code, f"README.md[python block {index}]", "exec"), namespace)


def test_error_transcripts_are_what_the_code_says():
    import jax

    import jaxcnn.functional as F

    text = README.read_text()
    x, w = jax.numpy.zeros((8, 28, 28, 1)), jax.numpy.zeros((5, 5, 1, 4))
    for call, expected in re.findall(r">>> (F\.conv\(.*?\))\n(ValueError: .*)", text):
        with pytest.raises(ValueError) as info:
            eval(call, {"F": F, "x": x, "w": w})
        assert f"ValueError: {info.value}" == expected


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    command = re.search(r"<!-- test-command -->\n```bash\n(.*)\n```", text).group(1)
    assert command == "python -m pytest -q -n auto"
    assert "<!-- test-command -->" in (README.parent / ".ci" / "run").read_text()
