"""Out-of-memory errors: recognized, sized, and turned into one clear jaxcnn message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxcnn.train.oom import (
    OutOfMemoryError,
    is_out_of_memory,
    oom_guard,
    requested_bytes,
)

# Messages as XLA writes them on CPU (checked under ulimit below), GPU (BFC allocator) and TPU (compiler).
CPU = "RESOURCE_EXHAUSTED: Out of memory allocating 14400000000 bytes."
GPU = (
    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.\n"
    "BufferAssignment OOM Debugging.\n..."
)
GPU_BFC = "RESOURCE_EXHAUSTED: Failed to allocate request for 16.00GiB (17179869184B) on device ordinal 0"
TPU = "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 20.5G of 15.48G hbm."


@pytest.mark.parametrize(
    "message, expected",
    [
        (CPU, 14400000000),
        (GPU, 17179869184),
        (GPU_BFC, 17179869184),
        (TPU, int(20.5 * 2**30)),
        ("RESOURCE_EXHAUSTED: no size given", None),
    ],
)
def test_requested_bytes_parses_every_backend(message, expected):
    assert requested_bytes(message) == expected


def test_recognizes_oom_and_nothing_else():
    assert is_out_of_memory(RuntimeError(CPU)) and is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("terminate called after throwing an instance of 'std::bad_alloc'"))
    assert not is_out_of_memory(RuntimeError("INVALID_ARGUMENT: shapes do not match"))
    assert not is_out_of_memory(ValueError("out of memory"))  # a jaxcnn argument error is never rewritten


def test_guard_gives_one_message_with_what_size_and_options():
    with pytest.raises(OutOfMemoryError) as info, oom_guard("compiling the training step of lwls_cnn", batch_size=512):
        raise RuntimeError(GPU)
    e = info.value
    text = str(e)
    assert (
        "out of memory while compiling the training step of lwls_cnn: XLA asked for 16.00 GiB (17179869184 bytes)"
        in text
    )
    assert "batch_size=512 -> 256" in text and "--grad-accum" in text and "--precision bf16" in text
    assert "\n" not in text and e.requested_bytes == 17179869184 and isinstance(e.original, RuntimeError)
    assert e.__cause__ is None and e.__suppress_context__  # printed alone, without XLA's traceback
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"), oom_guard("running"):  # others pass through
        raise RuntimeError("INVALID_ARGUMENT: shapes do not match")
    with pytest.raises(TypeError, match="what must be a non-empty string"), oom_guard(""):
        pass


_OVERSIZED = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp
    from jaxcnn.models import get_model
    from jaxcnn.train.oom import OutOfMemoryError, oom_guard
    model = get_model("mlp", widths=(8192,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    try:
        with oom_guard("running mlp on a batch of 100000", batch_size=100000):
            jax.block_until_ready(jax.jit(model.apply)(variables, jnp.ones((100000, 8, 8, 1))))
    except OutOfMemoryError as e:
        print(e)
        sys.exit(2)
    """
)


@pytest.mark.slow
def test_oversized_computation_under_ulimit_gives_one_clear_message():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    # 3 GB of address space: enough for JAX, not for the 100000 x 8192 float32 hidden layer (3.3 GB)
    cmd = f"ulimit -v 3000000; exec {sys.executable} -c {_quote(_OVERSIZED)}"
    out = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith(
        "out of memory while running mlp on a batch of 100000: XLA asked for 3.05 GiB (3276800000 bytes)"
    )
    assert "batch_size=100000 -> 50000" in lines[0] and "grad_accum" in lines[0] and "--precision bf16" in lines[0]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
