"""train.report_to: the real trackers (TensorBoard, MLflow with a local SQLite store, W&B offline, Trackio local) get the
Trainer's step logs and ragtune's summary (before, after, delta, verdict, config); each is read back."""

from __future__ import annotations

import glob
import json
import struct

import pytest

from tests.conftest import tiny_train_overrides


def wandb_records(path: str) -> list:
    """The records of an offline W&B run file (the LevelDB log format W&B writes: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = open(path, "rb").read(), 32768
    assert data[:4] == b":W&B"
    pos, parts, records = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if length == 0 and kind == 0:  # the rest of the block is padding
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_values(path: str, kind: str) -> dict:
    """The summary or config values of an offline W&B run, the last write of each key winning."""
    values = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == kind:
            for item in getattr(record, kind).update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow keeps artifacts in ./mlruns beside a SQLite store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # a local store
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return tmp_path


def test_every_tracker_gets_the_step_logs_and_ragtunes_summary(cli, tiny_embedder, pairs_file, tracker_env):
    run_dir = tracker_env / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.report_to=[tensorboard, mlflow, wandb, trackio]", "--allow-regression")
    assert code == 0, err
    assert "was not logged" not in (run_dir / "train.log").read_text()
    from ragtune.train.trackers import run_name

    name = run_name(run_dir)  # the folder's name and the run's start, e.g. run-20261203-121750
    assert name.startswith("run-")
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]["ndcg@10"]
    before = json.loads((run_dir / "eval_before.json").read_text())["metrics"]["ndcg@10"]

    # TensorBoard: the Trainer's loss and ragtune's scalars and texts in the run's folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars
    assert events.Scalars("ragtune/after/ndcg@10")[-1].value == pytest.approx(after, abs=1e-6)
    assert events.Scalars("ragtune/before/ndcg@10")[-1].step == 0
    assert {"ragtune/verdict/text_summary", "ragtune/config/text_summary"} <= set(events.Tags()["tensors"])

    # MLflow: one run, named after the run directory, with the step logs, the summary, tags and artifacts
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].info.run_name == name
    logged = mlflow.MlflowClient().get_run(runs[0].info.run_id)
    assert logged.data.metrics["ragtune/after/ndcg_10"] == pytest.approx(after, abs=1e-6)
    assert logged.data.metrics["ragtune/before/ndcg_10"] == pytest.approx(before, abs=1e-6)
    assert "eval_ndcg_10" in logged.data.metrics and "loss" in logged.data.metrics
    assert logged.data.tags["ragtune.verdict"].startswith(("improved", "NO GAIN", "REGRESSION"))
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "ragtune")}
    assert {"ragtune/config.yaml", "ragtune/summary.md", "ragtune/report.html"} <= artifacts

    # W&B offline: the summary and ragtune's config in the run file, in the ragtune project
    (run_file,) = glob.glob(str(tracker_env / "wandb" / "offline-run-*" / "run-*.wandb"))
    summary, config = wandb_values(run_file, "summary"), wandb_values(run_file, "config")
    assert summary["ragtune/after/ndcg@10"] == pytest.approx(after, abs=1e-6)
    assert summary["ragtune/verdict"].split(":")[0] in ("improved", "NO GAIN", "REGRESSION")
    assert config["ragtune"]["task"] == "embed" and config["ragtune"]["model"]["name"] == tiny_embedder
    run_record = next(r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run")
    assert run_record.project == "ragtune" and run_record.display_name == name

    # Trackio local: the Trainer's logs and ragtune's last log in the ragtune project
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("ragtune", name)
    assert any("train/loss" in entry for entry in logs)
    assert name in SQLiteStorage.get_runs("ragtune")  # the Trainer's run, resumed by ragtune (Trackio fixes its
    # folder when first imported, so other runs may share the project)
    assert logs[-1]["ragtune/after/ndcg@10"] == pytest.approx(after, abs=1e-6)
    assert json.loads(SQLiteStorage.get_run_config("ragtune", name)["ragtune"])["task"] == "embed"


def test_a_tracker_that_fails_costs_a_warning_not_the_run(tmp_path, monkeypatch, caplog):
    (tmp_path / "config.yaml").write_text("task: embed\n")
    from ragtune.config.schema import TrainSection
    from ragtune.eval.report import Comparison
    from ragtune.train.trackers import log_summary

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mysql+nosuchdriver://nowhere/db")
    comparison = Comparison("ndcg@10", {"ndcg@10": 0.5}, {"ndcg@10": 0.6})
    done = log_summary(TrainSection(report_to=["mlflow", "tensorboard"]), tmp_path, comparison, 4, "task: embed\n")
    assert done == ["tensorboard"]
    assert "ragtune's summary was not logged to mlflow" in caplog.text


def test_report_to_names_a_known_installed_tracker(cli, tiny_embedder, pairs_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    args = ("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir))
    code, _, err = cli(*args, "train.report_to=[wandbb]")
    assert code == 2 and "unknown tracker 'wandbb' (did you mean 'wandb'?)" in err and "Traceback" not in err
    monkeypatch.setitem(__import__("ragtune.train.trackers", fromlist=["x"]).TRACKERS, "wandb",
                        ("no_such_module_here", "wandb"))
    code, _, err = cli(*args, "train.report_to=[wandb]")
    assert code == 2 and "pip install 'ragtune[wandb]'" in err
    assert not run_dir.exists()


def test_none_all_and_the_trainers_other_integrations():
    from ragtune.train.trackers import TRACKERS, check_report_to, installed

    assert check_report_to(["none"]) == []
    assert check_report_to(["all"]) == ["all"] and set(installed(["all"])) == set(TRACKERS)  # dev installs all four
    assert installed(check_report_to(["comet_ml", "mlflow"])) == ["mlflow"]  # comet_ml gets the step logs only


def test_the_auto_recipes_comparison_gets_a_tracker_run_of_its_own(cli, tiny_embedder, pairs_file, tracker_env):
    run_dir = tracker_env / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.report_to=[tensorboard, mlflow]", "--recipe", "auto", "--budget", "1s",
                       "--allow-regression")
    assert code == 0, err
    import mlflow

    from ragtune.train.trackers import run_name

    runs = {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert len(runs) == 2 and run_name(run_dir) in runs  # the one trial's run, and the auto run's own
    auto, after = runs[run_name(run_dir)], json.loads((run_dir / "eval_after.json").read_text())
    assert auto.data.metrics["ragtune/after/ndcg_10"] == pytest.approx(after["metrics"]["ndcg@10"], abs=1e-6)
    assert auto.data.tags["ragtune.recipe"] == "auto"
    assert auto.data.tags["ragtune.winner"] == (after["trial"] or "base")
    assert "loss" not in auto.data.metrics  # the trial's step logs stay in the trial's run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    assert events.Scalars("ragtune/after/ndcg@10")[-1].value == pytest.approx(after["metrics"]["ndcg@10"], abs=1e-6)
    assert {"ragtune/winner/text_summary", "ragtune/why/text_summary"} <= set(events.Tags()["tensors"])
