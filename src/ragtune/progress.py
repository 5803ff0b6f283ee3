"""Progress reporting seam: the library announces phases; the CLI decides how (and whether) to show them."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)


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
