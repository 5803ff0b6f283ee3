"""CLI start-up: how long the commands that load no model take, each timed as a whole process by farm-bench,
side by side with `python -c "import torch"` (what any command paid before the CLI stopped importing torch).

Targets (issue 14): under 1.5 s each for `--help`, `COMMAND --help`, `config show TASK`, `data validate` on a small
file and a config error raised before a model loads; under 3 s for `index info`.

Run alone (two cores):  python -m benchmarks.cli_startup [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]
RAGTUNE = str(Path(sys.executable).parent / "ragtune")
TORCH = f"{sys.executable} -c 'import torch'"


def median_wall(report: str, which: str) -> float:
    match = re.search(rf"^{which} wall s\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", report, re.MULTILINE)
    if not match:
        raise RuntimeError(f"farm-bench printed no '{which} wall s' line:\n{report}")
    return float(match.group(2))


def tiny_index(folder: Path) -> Path:
    """An index over two short files, built with the packaged MiniLM (once, before timing)."""
    docs = folder / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Statins lower LDL cholesterol and the risk of heart attacks.", encoding="utf-8")
    (docs / "b.txt").write_text("Regular exercise lowers blood pressure in adults.", encoding="utf-8")
    subprocess.run([RAGTUNE, "-q", "index", "build", str(docs), "--out", str(folder / "index")], check=True)
    return folder / "index"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragtune-startup-"))
    data = work / "ok.jsonl"
    data.write_text('{"query": "what lowers cholesterol", "positive": "statins"}\n', encoding="utf-8")
    index = tiny_index(work)
    commands = {  # name -> (arguments, target seconds)
        "--help": (["--help"], 1.5),
        "train embed --help": (["train", "embed", "--help"], 1.5),
        "config show llm": (["config", "show", "llm"], 1.5),
        "data validate (1 line)": (["data", "validate", str(data)], 1.5),
        "config error before a model loads": (["train", "embed", "train.learning_rate=abc"], 1.5),
        "index info": (["index", "info", str(index)], 3.0),
    }
    results = {}
    for name, (argv, target) in commands.items():
        command = [RAGTUNE, *argv]
        done = subprocess.run(["farm-bench", "-n", str(args.runs), "--timeout", "600", "--vs", TORCH, "--",
                               *command], capture_output=True, text=True, cwd=ROOT)
        report = done.stdout + done.stderr
        wall, torch_wall = median_wall(report, "A"), median_wall(report, "B")
        results[name] = {"command": shlex.join(["ragtune", *argv]), "median_wall_s": wall, "target_s": target,
                         "met": wall < target, "import_torch_median_wall_s": torch_wall,
                         "ratio_to_import_torch": round(wall / torch_wall, 3)}
        print(f"{name:36s} {wall:6.2f} s (target < {target} s: {'met' if wall < target else 'MISSED'}); "
              f"`import torch` alone {torch_wall:.2f} s; ratio {wall / torch_wall:.2f}")
    write_result("cli_startup", {"runs": args.runs, "commands": results})


if __name__ == "__main__":
    main()
