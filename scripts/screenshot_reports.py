"""Render ragtune's HTML reports in headless Chromium and save a screenshot of each (Debian: apt install chromium).

Run: python scripts/screenshot_reports.py runs/quickstart/report.html runs/ladder/results.html --out docs/
Each PNG is named after its report's folder and file (report.png for the first one, so the README can show it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    sys.exit("no Chromium found: apt install chromium")


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    subprocess.run([browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    print(f"{page} -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--width", type=int, default=1180)
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(args.pages):
        name = "report.png" if i == 0 else f"{page.parent.name}-{page.stem}.png"
        screenshot(page, args.out / name, args.width, args.height)


if __name__ == "__main__":
    main()
