"""What the GPU check runs on, and which of its test files can run there (``benchmarks/gpu_check.sh``).

    python -m benchmarks.gpu_env info            # devices and versions
    python -m benchmarks.gpu_env tests [--dry-run]   # pytest arguments, one per line (skipped files on stderr)

The GPU image has jax, torch, torchvision, flax, optax and numpy, and nothing can be
installed there; ``scipy`` and ``hypothesis`` may be missing. A test file is chosen
only when every module it imports at the top level can be found, so pytest never
stops on an import error; each file left out is named with the missing module.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys

from benchmarks import _timing

#: the files that exercise conv, pool, norm, dropout and the train step.
TEST_FILES = (
    "tests/test_conv.py",
    "tests/test_pool.py",
    "tests/test_norm.py",
    "tests/test_dropout.py",
    "tests/test_train_core.py",
)
#: tests that need conftest's 8 forced CPU devices (pmap, meshes, synchronized statistics): deselected on one GPU.
MULTI_DEVICE = "not pmap and not shard and not mesh and not eight and not axis_name and not sync and not device"
#: the dry run's one tiny selection (CPU, seconds).
DRY_RUN_TESTS = ("tests/test_dropout.py", "-k", "hand_worked or rate_zero")
LOCAL = ("jaxcnn", "benchmarks", "oracles", "conftest")


def missing_imports(path: str) -> list[str]:
    """Top-level modules that ``path`` imports (at module level) and that cannot be found here."""
    with open(_timing.ROOT / path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names - set(LOCAL) - {"__future__"} if importlib.util.find_spec(n) is None)


def test_args(dry_run: bool) -> list[str]:
    """pytest arguments: the runnable files and the multi-device deselection (the dry run: one tiny selection)."""
    if dry_run:
        return list(DRY_RUN_TESTS)
    files = []
    for path in TEST_FILES:
        missing = missing_imports(path)
        if missing:
            print(f"gpu_check: skipping {path}: not importable here: {', '.join(missing)}", file=sys.stderr)
        else:
            files.append(path)
    if not files:
        raise SystemExit("gpu_check: no test file can be imported here")
    return [*files, "-k", MULTI_DEVICE]


def info() -> None:
    """Print JAX's devices and backend, PyTorch's CUDA device, and the versions."""
    import jax

    print(f"jax.default_backend(): {jax.default_backend()}")
    print(f"jax.devices(): {jax.devices()}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        print(f"torch.cuda.is_available(): {cuda}")
        if cuda:
            print(f"torch.cuda.get_device_name(0): {torch.cuda.get_device_name(0)}")
            print(f"torch.version.cuda: {torch.version.cuda}, cudnn: {torch.backends.cudnn.version()}")
    except ImportError:
        print("torch: not installed")
    for name, version in _timing.versions(
        (
            "jax",
            "jaxlib",
            "jax-cuda12-plugin",
            "flax",
            "optax",
            "torch",
            "torchvision",
            "numpy",
            "scipy",
            "hypothesis",
            "pytest",
        )
    ).items():
        print(f"  {name}: {version}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_env", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("info", "tests"))
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.what == "info":
        info()
    else:
        print("\n".join(test_args(args.dry_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
