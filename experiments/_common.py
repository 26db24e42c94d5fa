"""What every experiment shares: the command line, the result file, the claims it checks.

An experiment is a module ``experiments/<name>.py`` with a ``run(ctx) -> None``
function and a module docstring whose first line is its title. It measures
things with the public jaxcnn API, records them in ``ctx`` and *asserts* the
lecture's claim with ``ctx.check`` (a failed check makes the script exit 1 and
is written into the result file). Run one with
``python -m experiments.<name> [--quick]`` or all with
``python -m experiments.run_all [--quick]``.

Each run writes ``experiments/results/<name>.md`` (the tables, the checks, a
one-paragraph reading, the command and its duration) and any figures as
``experiments/results/<name>*.png``. ``--quick`` runs a small version for CI
and writes to ``experiments/results/quick/`` so it never overwrites the
committed full results.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcnn._figures import save

RESULTS = Path(__file__).resolve().parent / "results"
MNIST_DIR = Path(os.environ.get("JAXCNN_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))


class ClaimFailed(AssertionError):
    """A claim of the lecture that the measurement did not support."""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats and ints formatted for reading."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Context:
    """Handed to ``run(ctx)``: options, where to write, and the record of the run.

    Attributes:
      name: the experiment's module name.
      quick: the small CI-sized version.
      seed: base seed (every experiment must be deterministic given it).
      out_dir: where the result file and figures go.
    """

    name: str
    quick: bool
    seed: int
    out_dir: Path
    sections: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    headline: str = ""

    def figure_path(self, suffix: str = "") -> Path:
        """``<out_dir>/<name>[_suffix].png``."""
        return self.out_dir / f"{self.name}{'_' + suffix if suffix else ''}.png"

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add a markdown table under a heading (and print it)."""
        text = f"### {title}\n\n{markdown_table(headers, rows)}\n"
        self.sections.append(text)
        print(text)

    def text(self, paragraph: str) -> None:
        """Add a paragraph (e.g. the reading of the numbers)."""
        self.sections.append(paragraph.strip() + "\n")
        print(paragraph.strip() + "\n")

    def figure(self, path: Path, caption: str) -> None:
        """Reference a PNG written by the experiment (relative link in the result file)."""
        self.sections.append(f"![{caption}]({path.name})\n\n*{caption}*\n")

    def save_figure(self, fig: Any, *, caption: str, suffix: str = "", dpi: int = 110) -> Path:
        """Write ``fig`` to :meth:`figure_path` (creating ``out_dir``) and reference it with ``caption``."""
        path = self.figure_path(suffix)
        save(fig, path, dpi)
        self.figure(path, caption)
        return path

    def check(self, claim: str, ok: bool, detail: str = "") -> None:
        """Record a claim and whether the numbers support it; failures end the run with exit 1."""
        ok = bool(ok)
        self.checks.append((claim, ok, detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {claim}" + (f" ({detail})" if detail else ""))

    def set_headline(self, text: str) -> None:
        """The one-line result for experiments/README.md's index."""
        self.headline = text


def _write(ctx: Context, title: str, seconds: float, argv: Sequence[str]) -> Path:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if ctx.headline:
        lines += [f"**Headline:** {ctx.headline}", ""]
    lines += ctx.sections
    lines += ["### Claims checked", ""]
    lines += [
        f"- {'PASS' if ok else '**FAIL**'}: {claim}" + (f" — {detail}" if detail else "")
        for claim, ok, detail in ctx.checks
    ]
    import jax

    lines += [
        "",
        "---",
        f"Command: `python -m experiments.{ctx.name}{' ' + ' '.join(argv) if argv else ''}` — "
        f"{seconds:.0f} s on {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} cores, jax {jax.__version__}, {jax.devices()[0].platform}); seed {ctx.seed}.",
        "",
    ]
    path = ctx.out_dir / f"{ctx.name}.md"
    path.write_text("\n".join(lines))
    return path


def main(name: str, run: Callable[[Context], None], doc: str | None, argv: Sequence[str] | None = None) -> int:
    """The command line of one experiment: parse, run, write the result, exit 1 on a failed claim."""
    title = (doc or name).strip().splitlines()[0]
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=title)
    parser.add_argument("--quick", action="store_true", help="small CI-sized run (results go to results/quick/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="where to write (default experiments/results[/quick])")
    args = parser.parse_args(argv)
    out = Path(args.out_dir) if args.out_dir else (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)  # before run(): experiments save figures into it
    ctx = Context(name=name, quick=args.quick, seed=args.seed, out_dir=out)
    t0 = time.perf_counter()
    error = None
    try:
        run(ctx)
    except ClaimFailed as e:
        error = str(e)
    seconds = time.perf_counter() - t0
    path = _write(ctx, title, seconds, sys.argv[1:] if argv is None else list(argv))
    failed = [c for c, ok, _ in ctx.checks if not ok]
    print(f"wrote {path} ({seconds:.0f} s); {len(ctx.checks) - len(failed)}/{len(ctx.checks)} claims hold")
    if error or failed or not ctx.checks:
        if not ctx.checks:
            print("no claim was checked: an experiment must assert what it shows", file=sys.stderr)
        return 1
    return 0


def experiment(module_name: str) -> Any:
    """Import ``experiments.<module_name>``."""
    return importlib.import_module(f"experiments.{module_name}")
