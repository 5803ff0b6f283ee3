"""CLI output: global flags, logging, rich rendering, JSON mode and the rich progress reporter.

Nothing here imports torch, transformers or datasets: the CLI starts in well under a second, and a command pays for
a library only when it uses one. Their logging is set up the moment they are imported (`when_imported`).
"""

from __future__ import annotations

import importlib.abc
import json
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from ragtune.progress import Detail, Reporter, every_step


@dataclass
class Flags:
    json: bool = False
    quiet: bool = False
    verbose: bool = False


FLAGS = Flags()
# Not a terminal (a pipe, a file, a test): no width limit, so that every key, value and path stays whole and every
# table row stays on one line for grep and cut.
PIPE_WIDTH = 100_000
console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)
for _out in (console, errors):
    if not _out.is_terminal:
        _out.width = PIPE_WIDTH

GLOBAL_FLAGS = {"--json": "json", "-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}


def take_global_flags(argv: list[str]) -> list[str]:
    """Remove --json/-q/-v from anywhere before `--` and record them, so they work on every command."""
    FLAGS.json = FLAGS.quiet = FLAGS.verbose = False
    rest, passthrough = [], False
    for arg in argv:
        if not passthrough and arg in GLOBAL_FLAGS:
            setattr(FLAGS, GLOBAL_FLAGS[arg], True)
            continue
        passthrough = passthrough or arg == "--"
        rest.append(arg)
    setup_logging()
    return rest


def setup_logging() -> None:
    level = logging.DEBUG if FLAGS.verbose else logging.ERROR if FLAGS.quiet or FLAGS.json else logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ragtune", False):
            root.removeHandler(handler)
    if errors.is_terminal:
        handler: logging.Handler = RichHandler(console=errors, show_path=False, show_time=False, markup=False)
    else:  # piped or captured: one line per record, never wrapped, so FILE:LINE stays greppable
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._ragtune = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    root.addHandler(handler)
    for name in ("transformers", "sentence_transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.INFO if FLAGS.verbose else logging.ERROR)
    logging.getLogger("ragtune").setLevel(logging.DEBUG if FLAGS.verbose else logging.INFO)
    if not FLAGS.verbose:
        # Libraries' own tqdm bars (sentence-transformers' "Computing widget examples" when it writes a model
        # card) would interleave with ragtune's output; ragtune shows its own progress (progress.counting).
        os.environ["TQDM_DISABLE"] = "1"
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # PEFT asks the hub, at every adapter save, whether the base's vocabulary changed; offline that is two
        # warnings a save. ragtune knows: it resizes the embeddings itself and says so in the adapter's card.
        warnings.filterwarnings("ignore", message="Unable to fetch remote file due to the following error")
        warnings.filterwarnings("ignore", message="Could not find a config file in .* - will assume that the vocab")
    when_imported("transformers", _quiet_transformers)
    when_imported("datasets", _quiet_datasets)


def _quiet_transformers(_module) -> None:
    from transformers.utils import logging as hf_logging

    # transformers prints through its own handler; route it through the root logger (and train.log) instead.
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    if not FLAGS.verbose:
        hf_logging.disable_progress_bar()


def _quiet_datasets(module) -> None:
    if not FLAGS.verbose:
        module.disable_progress_bars()


class _ImportHook(importlib.abc.MetaPathFinder):
    """Calls a function on a module right after its first import, so that the CLI configures a heavy library
    without importing it up front."""

    def __init__(self):
        self.hooks: dict[str, Callable] = {}

    def find_spec(self, name, path, target=None):
        if name not in self.hooks:
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") \
                else None
            if spec is not None and spec.loader is not None:
                run, hook = spec.loader.exec_module, self.hooks.pop(name)

                def exec_module(module, run=run, hook=hook):
                    run(module)
                    hook(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


_HOOK = _ImportHook()


def when_imported(name: str, hook: Callable) -> None:
    """Run `hook(module)` once `name` is imported: now if it already is, else right after its import."""
    if name in sys.modules:
        hook(sys.modules[name])
        return
    _HOOK.hooks[name] = hook
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def say(text: str) -> None:
    """Human output, suppressed by --json and -q."""
    if not FLAGS.json and not FLAGS.quiet:
        console.print(text)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left", min_width=len(title))  # a title wider than the cells stays whole
    for i, column in enumerate(columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*[f"{c:.4f}" if isinstance(c, float) else str(c).replace("\n", "\\n") for c in row])
    return out


def show(renderable: Any) -> None:
    if not FLAGS.json and not FLAGS.quiet:
        console.print(renderable)


def _train_bar(progress):
    """A TrainerCallback that drives the training bar (transformers is imported only when a run starts)."""
    from transformers import TrainerCallback

    class TrainBar(TrainerCallback):
        def __init__(self):
            self.progress, self.task = progress, None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress.start()
                self.task = self.progress.add_task("Training", total=state.max_steps, completed=state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.task is not None:
                self.progress.stop()

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.task is not None and logs and "loss" in logs:
                self.progress.update(self.task, description=f"Training (loss {logs['loss']:.4f})")

    return TrainBar()


_SPINNERS: list = []  # the phase spinners showing now (RichReporter.phase), innermost last


def bar_display(on: Console, **options):
    """A rich bar with its count, elapsed time and ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=on, **options)


@contextmanager
def progress_display(label: str, total: int, detail: Detail = None):
    """The CLI's `counting` display: a bar on stderr when it is a terminal, a plain line every 10% when it is not
    (each with `detail()` beside the label); nothing under -q or --json."""
    if FLAGS.quiet or FLAGS.json or total <= 0:
        yield lambda n=1: None
        return
    if not errors.is_terminal:
        def line(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

        yield every_step(label, total, line, detail=detail)
        return
    spinner = _SPINNERS[-1] if _SPINNERS else None
    if spinner is not None:  # one live display per terminal: the phase's spinner waits while the bar runs
        spinner.stop()
    try:
        with bar_display(errors, transient=True) as bar:
            task = bar.add_task(label, total=total)

            def advance(n: int = 1) -> None:
                bar.update(task, advance=n, **({"description": f"{label} ({detail()})"} if detail else {}))

            yield advance
    finally:
        if spinner is not None:
            spinner.start()


class RichReporter(Reporter):
    """Spinners for phases, a bar for training; silent under --json or -q."""

    def __init__(self):
        self.enabled = not (FLAGS.json or FLAGS.quiet) and sys.stdout.isatty() or FLAGS.verbose
        self.progress = bar_display(console, disable=not self.enabled)

    @contextmanager
    def phase(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.enabled:
            with console.status(f"{label} ...") as spinner:
                _SPINNERS.append(spinner)
                try:
                    yield
                finally:
                    _SPINNERS.pop()
        else:
            yield
        say(f"{label}: done in {time.perf_counter() - start:.1f} s")

    def note(self, text: str) -> None:
        super().note(text)
        say(escape(text))

    def trainer_callbacks(self) -> list:
        return [_train_bar(self.progress)] if self.enabled else []
