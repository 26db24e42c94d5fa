"""Run every experiment (``python -m experiments.run_all [--quick]``) and rebuild the index.

Experiments run one after another in fresh processes (so one's JAX state or
memory cannot affect another). ``experiments/README.md``'s table of headlines is
regenerated from the result files after a full run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Experiment modules: ``NN_name.py`` files, sorted by their number."""
    return sorted(p.stem for p in HERE.glob("[0-9][0-9]_*.py"))


def index(results: Path) -> str:
    rows = ["| # | experiment | headline |", "|---|---|---|"]
    for name in discover():
        md = results / f"{name}.md"
        title, headline = name, "(not run yet)"
        if md.is_file():
            text = md.read_text()
            title = text.splitlines()[0].lstrip("# ").strip()
            m = re.search(r"\*\*Headline:\*\* (.*)", text)
            headline = m.group(1) if m else "(no headline)"
        rows.append(f"| {name[:2]} | [{title}](results/{name}.md) | {headline} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.run_all")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="run only these experiments (module names or numbers)")
    args = p.parse_args(argv)
    names = discover()
    if args.only:
        names = [n for n in names if n in args.only or n[:2] in args.only]
    failures, t_all = [], time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", f"experiments.{name}"] + (["--quick"] if args.quick else [])
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(
            f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s", flush=True
        )
        if rc:
            failures.append(name)
    if not args.quick:
        readme = HERE / "README.md"
        text = readme.read_text() if readme.is_file() else ""
        table = index(HERE / "results")
        start, end = "<!-- index -->", "<!-- /index -->"
        if start in text and end in text:
            text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end) :]
            readme.write_text(text)
    print(f"{len(names) - len(failures)}/{len(names)} experiments passed in {time.perf_counter() - t_all:.0f} s")
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
