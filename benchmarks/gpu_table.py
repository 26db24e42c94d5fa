"""The GPU training table: jaxcnn vs PyTorch CUDA eager, float32 and bfloat16 (``benchmarks/gpu_check.sh``).

    python -m benchmarks.gpu_table --out benchmarks/results        # on a GPU machine
    python -m benchmarks.gpu_table --dry-run --out /tmp/x           # the plumbing, on CPU, in seconds

Rows: LWLS CNN (batch 128, Adam), ResNet-18 CIFAR and MobileNetV2 CIFAR (batch 128, SGD
momentum), each in float32 and bfloat16. The peers are :func:`benchmarks.training.jaxcnn_case`
(``steps_per_call=1``, the model's ``dtype=bfloat16``: bfloat16 compute, float32 parameters)
and :func:`benchmarks.training.torch_case` on ``cuda`` (``torch.autocast(bfloat16)`` around
the forward pass and loss, float32 parameters), timed interleaved in one process by
:func:`benchmarks._timing.measure`; the ratio is jaxcnn's images/s over PyTorch's, from this run.
Both sides keep their library's default float32 math (JAX on GPU: ``jax_default_matmul_precision``
unset; PyTorch: ``cudnn.allow_tf32`` and ``cuda.matmul.allow_tf32`` as found); the header records them.

``--dry-run``: CPU, batch 4, one repeat of a short block, and the LWLS CNN standing in for all
three models (the ResNet-18 and MobileNetV2 rows say so): it tests the plumbing, not speed.
Output: ``<out>/<gpu-name-slug>.md`` and ``.json`` (the dry run: ``<cpu-slug>-dry-run``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks import _timing, training
from benchmarks.training import TrainConfig

#: (row label, benchmark model, batch, optimizer, learning rate)
ROWS = (
    ("LWLS CNN", "lwls_cnn", 128, "adam", 1e-3),
    ("ResNet-18 CIFAR", "resnet18_cifar", 128, "momentum", 0.1),
    ("MobileNetV2 CIFAR", "mobilenet_v2_cifar", 128, "momentum", 0.1),
)
DTYPES = ("float32", "bfloat16")


def configs(dry_run: bool) -> list[tuple[str, TrainConfig]]:
    """(label, configuration) per row; the dry run: batch 4, the LWLS CNN for every model."""
    out = []
    for label, model, batch, opt, lr in ROWS:
        if dry_run:
            stand_in = "" if model == "lwls_cnn" else " (dry run: LWLS CNN stand-in)"
            out.append((label + stand_in, TrainConfig("lwls_cnn", 4, opt, lr, 1)))
        else:
            out.append((label, TrainConfig(model, batch, opt, lr, 1)))
    return out


def device_name(device: str) -> str:
    """The GPU's name (``torch.cuda.get_device_name``), or the CPU model for ``device="cpu"``."""
    if device == "cpu":
        return _timing.cpu_model()
    import torch

    return torch.cuda.get_device_name(0)


def slug(name: str) -> str:
    """``"NVIDIA H200" -> "nvidia-h200"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-device"


def header(device: str) -> dict[str, Any]:
    import jax
    import torch

    info = _timing.machine_info()
    info.update(
        {
            "device": device_name(device),
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "torch_cuda": torch.version.cuda,
            "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    )
    return info


def run(*, dry_run: bool, device: str, repeats: int, min_time: float, log=print) -> list[dict[str, Any]]:
    """One record per (row, dtype): both peers' statistics and the ratio."""
    records = []
    for label, cfg in configs(dry_run):
        for dtype in DTYPES:
            log(f"gpu table: {label}, {dtype}, batch {cfg.batch}")
            jx, _ = training.jaxcnn_case(cfg, 1, dtype=dtype)
            jx.name = "jaxcnn"
            pt, _ = training.torch_case(cfg, device=device, dtype=dtype)
            pt.name = "torch"
            stats = _timing.measure([jx, pt], repeats=repeats, min_time=min_time, log=log)
            ips = {k: cfg.batch / st.median_s for k, st in stats.items()}
            records.append(
                {
                    "row": label,
                    "model": cfg.model,
                    "dtype": dtype,
                    "batch": cfg.batch,
                    "optimizer": cfg.optimizer,
                    "images_per_s": ips,
                    "ratio": ips["jaxcnn"] / ips["torch"],
                    "stats": {k: st.to_dict() for k, st in stats.items()},
                }
            )
            del jx, pt
    return records


def markdown(head: dict[str, Any], records: list[dict[str, Any]], dry_run: bool) -> str:
    lines = [
        f"# GPU training table: {head['device']}"
        + (" (DRY RUN on CPU: plumbing only, not a result)" if dry_run else ""),
        "",
        f"Measured {head['date_utc']} at git {head['git']} by `benchmarks/gpu_check.sh` "
        "(`python -m benchmarks.gpu_table`). JAX devices: " + ", ".join(head["jax_devices"]) + ".",
        "",
        "Train step, images/s (median of the repeats, peers interleaved in one process). jaxcnn: "
        '`make_train_step(strategy="jit")`, bfloat16 rows with the model\'s `dtype=bfloat16`. PyTorch: '
        "the eager loop on CUDA, bfloat16 rows under `torch.autocast(bfloat16)`; both keep float32 parameters.",
        f"Float32 math as each library defaults: jax_default_matmul_precision={head['jax_default_matmul_precision']}, "
        f"torch cudnn.allow_tf32={head['torch_cudnn_allow_tf32']}, "
        f"matmul.allow_tf32={head['torch_matmul_allow_tf32']}.",
        "",
        "| model | dtype | batch | jaxcnn | PyTorch eager | jaxcnn / PyTorch | jaxcnn first call s | PyTorch first call s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ips, st = r["images_per_s"], r["stats"]
        lines.append(
            f"| {r['row']} | {r['dtype']} | {r['batch']} | {ips['jaxcnn']:,.1f} | {ips['torch']:,.1f} | "
            f"{r['ratio']:.2f}x | {st['jaxcnn']['first_call_s']:.2f} | {st['torch']['first_call_s']:.2f} |"
        )
    vers = ", ".join(f"{k} {v}" for k, v in head["versions"].items())
    lines += ["", f"Versions: {vers}; CUDA (torch) {head['torch_cuda']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_table", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for <device>.md and .json")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: test the plumbing")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None, help="seconds per timed block")
    args = p.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run:
        import jax
        import torch

        if jax.default_backend() != "gpu" or not torch.cuda.is_available():
            print(
                f"gpu_table: no GPU (jax backend {jax.default_backend()!r}, torch.cuda.is_available() "
                f"{torch.cuda.is_available()}); use --dry-run on CPU",
                file=sys.stderr,
            )
            return 1
    repeats = args.repeats or (1 if args.dry_run else 5)
    min_time = args.min_time or (0.01 if args.dry_run else 0.25)
    if args.dry_run:  # the stand-in rows compile the same programs: a compilation cache keeps the dry run short
        import atexit
        import shutil
        import tempfile

        import jax

        cache = tempfile.mkdtemp(prefix="gpu_table_jax_cache_")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    head = header(device)
    records = run(dry_run=args.dry_run, device=device, repeats=repeats, min_time=min_time)
    stem = slug(head["device"]) + ("-dry-run" if args.dry_run else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(
        json.dumps(
            {"machine": head, "dry_run": args.dry_run, "repeats": repeats, "min_time_s": min_time, "rows": records},
            indent=1,
        )
    )
    (out / f"{stem}.md").write_text(markdown(head, records, args.dry_run))
    print(f"gpu_table: wrote {out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
