"""Progress reporting seam: the library announces phases and counts long work; the CLI decides how (and whether) to
show them."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Advance = Callable[[int], None]
Detail = Callable[[], str] | None  # what the work has found so far ("12 kept"), shown after the count
# (label, total, detail) -> a context that yields `advance(n)`; the CLI installs one (set_display)
Display = Callable[[str, int, Detail], ContextManager[Advance]]
_DISPLAY: Display | None = None
STEP = 0.1  # without a bar, one line per this share of the work
QUIET_S = 2.0  # ... and none before the work has run this long: a short job says nothing


class Reporter:
    """Logs phases with their duration. The CLI substitutes a rich display; tests use this one."""

    @contextmanager
    def phase(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s ...", label)
        yield
        log.info("%s done in %.1f s", label, time.perf_counter() - start)

    def note(self, text: str) -> None:
        """A one-line fact worth showing at start (device, data sizes)."""
        log.info(text)

    def trainer_callbacks(self) -> list:
        """Extra TrainerCallbacks that display training progress."""
        return []


def set_display(display: Display | None) -> None:
    """How `counting` shows progress from now on (None: a log line every 10%)."""
    global _DISPLAY
    _DISPLAY = display


def every_step(label: str, total: int, emit: Callable[[str], None], quiet_s: float | None = None,
               detail: Detail = None) -> Advance:
    """An `advance(n)` that calls `emit` with a line at every 10% of `total` (done, count, `detail()`, elapsed time
    and ETA), once the work has run `quiet_s` seconds (QUIET_S by default)."""
    start, state = time.perf_counter(), {"done": 0, "shown": 0.0}
    quiet_s = QUIET_S if quiet_s is None else quiet_s

    def advance(n: int = 1) -> None:
        state["done"] += n
        share = state["done"] / total if total else 1.0
        elapsed = time.perf_counter() - start
        if elapsed < quiet_s or (share + 1e-9 < state["shown"] + STEP and state["done"] < total):
            return
        state["shown"] = share
        eta = elapsed / share - elapsed if share > 0 else 0.0
        found = f", {detail()}" if detail else ""
        emit(f"{label}: {share:.0%} ({state['done']:,}/{total:,}){found}, {elapsed:.0f} s, about {eta:.0f} s left")

    return advance


@contextmanager
def _logged(label: str, total: int, detail: Detail = None) -> Iterator[Advance]:
    yield every_step(label, total, log.info, detail=detail)


@contextmanager
def counting(label: str, total: int, detail: Detail = None) -> Iterator[Advance]:
    """Count `total` units of long work (texts encoded, chunks read, questions answered) under `label`: a bar on a
    terminal, a line every 10% elsewhere, with `detail()` beside the count; nothing from ranks other than 0."""
    from ragtune.utils import is_main_process

    if not is_main_process():
        yield lambda n=1: None
        return
    with (_DISPLAY or _logged)(label, total, detail) as advance:
        yield advance


def in_slices(label: str, items: list, size: int, work: Callable[[list], T]) -> list[T]:
    """`work` over consecutive slices of `size` items, counted under `label`; one result per slice, in order."""
    results = []
    with counting(label, len(items)) as advance:
        for start in range(0, len(items), size):
            part = items[start:start + size]
            results.append(work(part))
            advance(len(part))
    return results
