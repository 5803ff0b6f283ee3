"""The epochs rule of `train embed`: whole epochs enough for train.min_steps, unless the config names the epochs."""

from __future__ import annotations

import pytest

from ragtune.config import load_config
from ragtune.train.epochs import epochs_for, steps_per_epoch


def train_section(*overrides: str):
    return load_config("embed", None, ["data.train=x.jsonl", *overrides]).train


@pytest.mark.parametrize(("examples", "epochs"), [
    (150, 8.0),  # 5 steps an epoch
    (820, 2.0),  # SciFact after its dev carve: 26 steps an epoch
    (1500, 1.0),  # PubMedQA after its dev carve: 47 steps
    (100_000, 1.0),
    (20, 10.0),  # 1 step an epoch: capped at max_auto_epochs
])
def test_small_data_gets_the_epochs_that_make_min_steps(examples, epochs):
    got, why = epochs_for(train_section(), examples)
    assert got == epochs and "train.min_steps" in why


def test_named_epochs_max_steps_or_no_min_steps_are_kept_as_they_are():
    assert epochs_for(train_section("train.num_train_epochs=1"), 150) == (1.0, "as configured")
    assert epochs_for(train_section("train.min_steps=null"), 150) == (1.0, "as configured")
    assert epochs_for(train_section("train.max_steps=7"), 150)[0] == 1.0
    assert epochs_for(train_section("train.min_steps=20", "train.max_auto_epochs=3"), 150)[0] == 3.0


def test_steps_count_accumulation_and_processes():
    train = train_section("train.gradient_accumulation_steps=2")
    assert steps_per_epoch(train, 320) == 5 and steps_per_epoch(train, 320, processes=2) == 3
    assert epochs_for(train, 320, processes=2)[0] == 10.0  # 3 steps an epoch: 14 needed, capped at 10


def test_the_rule_lands_in_the_runs_config_and_its_start_line(cli, tiny_embedder, pairs_file, tmp_path):
    import yaml

    run_dir = tmp_path / "run"
    code, out, err = cli("train", "embed", f"data.train={pairs_file}", f"model.name={tiny_embedder}",
                         f"output.dir={run_dir}", "train.per_device_train_batch_size=8", "train.min_steps=100",
                         "train.max_auto_epochs=3", "eval.batch_size=16", "train.eval_steps=50",
                         "train.save_steps=50", "--allow-regression")
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["num_train_epochs"] == 3
    assert "3 epochs (" in " ".join(out.split())


@pytest.mark.parametrize("bad", ["train.min_steps=0", "train.max_auto_epochs=0", "train.min_steps=many"])
def test_a_bad_rule_setting_is_one_line(cli, pairs_file, tmp_path, bad):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", f"output.dir={tmp_path / 'run'}", bad)
    assert code == 2 and bad.split("=")[0] in err and len(err.strip().splitlines()) == 1, err
