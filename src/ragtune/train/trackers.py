"""ragtune's proof in the experiment trackers that `train.report_to` names: the before and after evaluations, each
metric's delta and paired-test p-value, the verdict and the resolved config, logged as the run's summary beside the
Trainer's own step logs (which the Trainer's callbacks send)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.run_dir import RunDir

log = logging.getLogger(__name__)

PROJECT = "ragtune"  # the W&B and Trackio project, unless WANDB_PROJECT or train.extra.project says otherwise
# tracker -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}
# The Trainer's other integrations pass through with their step logs only; `all` means every installed one.
STEP_LOGS_ONLY = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
                  "neptune", "swanlab")


def check_report_to(names: list[str]) -> list[str]:
    """Each name a tracker the Trainer knows (`none` alone means no tracker); ValueError says the fix."""
    from ragtune.choices import one_of

    for name in names:
        one_of("tracker", name, [*TRACKERS, *STEP_LOGS_ONLY, "all", "none"],
               f"choose from {', '.join(TRACKERS)} (which also get ragtune's before/after summary), "
               f"{', '.join(STEP_LOGS_ONLY)}, all or none")
    return [] if names == ["none"] else names


def check_installed(names: list[str]) -> None:
    """Before a run starts: each of ragtune's trackers it names is installed (ConfigError with the extra)."""
    from ragtune.errors import ConfigError

    for name in names:
        if name in TRACKERS and importlib.util.find_spec(TRACKERS[name][0]) is None:
            raise ConfigError(f"train.report_to: {name} is not installed; pip install 'ragtune[{TRACKERS[name][1]}]'")


def installed(names: list[str]) -> list[str]:
    """ragtune's trackers among `names`, with `all` standing for every installed one."""
    if "all" in names:
        return [n for n, (module, _) in TRACKERS.items() if importlib.util.find_spec(module) is not None]
    return [n for n in names if n in TRACKERS]


def run_name(run_dir: Path) -> str:
    """The trackers' name for one run of RUN: the folder's name and when the run started (config.yaml's write
    time), so that a rerun, or another project's `run`, is a run of its own (Trackio resumes runs by name). Only
    rank 0 logs to the trackers."""
    config = RunDir(run_dir).config
    started = config.stat().st_mtime if config.is_file() else time.time()  # ranks > 0 may not see it yet
    return f"{Path(run_dir).name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}"


@dataclass
class Summary:
    """What a finished run tells the trackers."""

    run_dir: Path
    metrics: dict[str, float]  # ragtune/before/M, ragtune/after/M, ragtune/delta/M, ragtune/p_value/M
    verdict: str
    improved: bool
    step: int  # the best checkpoint's step (the after metrics')
    config: dict
    name: str  # the run's name in the trackers (run_name)
    notes: dict[str, str] = field(default_factory=dict)  # more texts, e.g. the auto recipe's winner
    own_run: bool = False  # no Trainer opened a tracker run for it (the auto recipe): start a new one

    @classmethod
    def of(cls, run_dir: Path, comparison, step: int | None, config_yaml: str, name: str) -> Summary:
        import yaml

        metrics = {}
        for metric, before, after, delta in comparison.rows():
            metrics.update({f"ragtune/before/{metric}": before, f"ragtune/after/{metric}": after,
                            f"ragtune/delta/{metric}": delta})
        for metric, p in (comparison.p_values or {}).items():
            if p is not None:
                metrics[f"ragtune/p_value/{metric}"] = p
        return cls(Path(run_dir), metrics, comparison.verdict, not comparison.failed, step or 0,
                   yaml.safe_load(config_yaml), name)

    @property
    def texts(self) -> dict[str, str]:
        return {"ragtune/verdict": self.verdict, "ragtune/improved": str(self.improved).lower(), **self.notes}


def _tensorboard(summary: Summary) -> None:
    """Scalars under ragtune/ in the run's TensorBoard folder (one run beside the Trainer's events), and the verdict
    and config as text."""
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(RunDir(summary.run_dir).tensorboard)) as writer:
        for name, value in summary.metrics.items():
            writer.add_scalar(name, value, 0 if "/before/" in name else summary.step)
        for name, text in summary.texts.items():
            if name != "ragtune/improved":
                writer.add_text(name, text, summary.step)
        config = yaml.safe_dump(summary.config, sort_keys=False)
        writer.add_text("ragtune/config", "".join(f"    {line}\n" for line in config.splitlines()), summary.step)


def mlflow_name(name: str) -> str:
    """A metric name as MLflow accepts it, spelled as the Trainer's MLflow callback spells its own ('@' -> '_')."""
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", name)


def _mlflow(summary: Summary) -> None:
    """Into the run the Trainer's callback opened (reopened, as the callback ends it with training): metrics, the
    verdict as tags, the config, summary.md and report.html as artifacts."""
    import mlflow

    active = mlflow.active_run()  # a run the caller opened around ragtune's, kept open
    if active is None:
        last = None if summary.own_run else mlflow.last_active_run()
        if last is not None:
            mlflow.start_run(run_id=last.info.run_id)
        else:
            mlflow.start_run(run_name=summary.name)
    try:
        mlflow.log_metrics({mlflow_name(k): v for k, v in summary.metrics.items()}, step=summary.step)
        mlflow.set_tags({mlflow_name(k).replace("/", "."): v for k, v in summary.texts.items()})
        mlflow.log_dict(summary.config, "ragtune/config.yaml")
        for path in (RunDir(summary.run_dir).summary, RunDir(summary.run_dir).report):
            if path.is_file():
                mlflow.log_artifact(str(path), "ragtune")
    finally:
        if active is None:
            mlflow.end_run()


def _wandb(summary: Summary) -> None:
    """Into the run the Trainer's callback started (still open after training): summary values and the config
    under `ragtune`; then the run is finished (ragtune's runs end with the process's training)."""
    import os

    import wandb

    run = wandb.run or wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=summary.name)
    run.summary.update({**summary.metrics, **summary.texts})
    run.config.update({"ragtune": summary.config}, allow_val_change=True)
    run.finish()


@contextlib.contextmanager
def prints_to_log():
    """A library's print()s (Trackio announces itself on stdout) go to the log and train.log, not into ragtune's
    output."""
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        yield
    for line in captured.getvalue().splitlines():
        if line.strip():
            log.info(line.strip())


def quiet_callbacks(trainer) -> None:
    """Route the Trainer's Trackio callback's prints (at the start and end of training) to the log."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TrackioCallback":
            for hook in ("on_train_begin", "on_train_end"):
                setattr(callback, hook, _logging_prints(getattr(callback, hook)))


def _logging_prints(method):
    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with prints_to_log():
            return method(*args, **kwargs)

    return wrapped


def _trackio(summary: Summary, project: str) -> None:
    """The run the Trainer's callback logged to, resumed by its name: one last log after the Trainer's, the config
    under `ragtune`."""
    import trackio

    with prints_to_log():
        trackio.init(project=project, name=summary.name, resume="allow")
        try:
            trackio.config.update({"ragtune": json.dumps(summary.config), **summary.texts}, allow_val_change=True)
            trackio.log(summary.metrics)
        finally:
            trackio.finish()


def log_summary(train, run_dir: Path, comparison, step: int | None, config_yaml: str,
                notes: dict[str, str] | None = None, own_run: bool = False) -> list[str]:
    """Send the run's summary to each of ragtune's trackers in `train.report_to`; return those that took it. A
    tracker that fails costs a warning, never the run (its proof is already on disk). `own_run`: no Trainer logged
    this run (the auto recipe's comparison), so each tracker gets a run of its own, not the last one's."""
    summary = Summary.of(run_dir, comparison, step, config_yaml, train.extra.get("run_name") or run_name(run_dir))
    summary.notes, summary.own_run = notes or {}, own_run
    project = train.extra.get("project", PROJECT)
    senders = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb,
               "trackio": lambda s: _trackio(s, project)}
    done = []
    for name in installed(train.report_to):
        try:
            senders[name](summary)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 (a tracker's outage must not lose a finished run)
            log.warning("ragtune's summary was not logged to %s (%s: %s)", name, type(exc).__name__, exc)
    return done
