"""Config: schema, YAML/JSON loading, overrides, one ConfigError listing every problem, `config show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ragtune.config import EmbedConfig, dump_config, load_config
from ragtune.errors import ConfigError
from ragtune.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_shared_contract():
    cfg = EmbedConfig()
    assert cfg.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    # lr 5e-5, the guided loss and positive-aware mining: the defaults measured on both leave-one-out domains
    assert cfg.train.per_device_train_batch_size == 32 and cfg.train.learning_rate == 5e-5
    assert cfg.eval.primary_metric == "ndcg@10" and cfg.eval.ks == [1, 3, 5, 10, 100]
    assert cfg.loss == "gist" and cfg.data.format == "auto"
    assert cfg.data.hard_negatives.first_stage == "dense:base" and cfg.data.hard_negatives.relative_margin == 0.05
    assert cfg.train.base_as_candidate


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: x\ntrain:\n  num_train_epochs: 2\n")
    cfg = load_config("embed", path, ["train.learning_rate=3e-5", "lora_free=1"][:1] + ["matryoshka_dims=[64, 32]"])
    assert cfg.model.name == "x" and cfg.train.num_train_epochs == 2 and cfg.train.learning_rate == 3e-5
    assert cfg.matryoshka_dims == [64, 32]


def test_json_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"seed": 7}}))
    assert load_config("embed", path).train.seed == 7


def test_every_problem_at_once_with_paths_lines_and_suggestions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  nme: x\ntrain:\n  learning_rate: fast\n  per_device_train_batch_size: -1\nloss: mnlr\n")
    with pytest.raises(ConfigError) as info:
        load_config("embed", path)
    text = str(info.value)
    assert len(info.value.problems) == 4 and str(path) in text
    assert "line 2: unknown key 'model.nme' (did you mean 'name'?)" in text
    assert "line 4: train.learning_rate" in text and "'fast'" in text
    assert "train.per_device_train_batch_size" in text
    assert "did you mean 'mnrl'" in text
    assert isinstance(info.value, ValueError)


def test_dropout_is_a_probability():
    assert load_config("embed", None, ["model.dropout=0"]).model.dropout == 0.0
    with pytest.raises(ConfigError, match="model.dropout"):
        load_config("embed", None, ["model.dropout=1.5"])


def test_primary_metric_must_be_computed():
    with pytest.raises(ConfigError, match="primary_metric 'ndcg@7' is not computed"):
        load_config("embed", None, ["eval.primary_metric=ndcg@7"])


def test_save_steps_must_align_with_eval_steps():
    with pytest.raises(ConfigError, match="multiple of eval_steps"):
        load_config("embed", None, ["train.eval_steps=30", "train.save_steps=100"])


def test_override_values_are_yaml_scalars_and_prefixes_stay_strings():
    cfg = load_config("embed", None, ["train.gradient_checkpointing=true", "prompts.query=query: ",
                                      "train.extra={max_grad_norm: 0.5}"])
    assert cfg.train.gradient_checkpointing is True and cfg.prompts.query == "query: "
    assert cfg.train.extra == {"max_grad_norm": 0.5}


def test_bad_override_shape():
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_config("embed", None, ["train.learning_rate"])


def test_resolved_config_round_trips():
    cfg = load_config("embed", None, ["train.seed=3"])
    again = EmbedConfig.model_validate(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_carry_their_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    folder = path.parent.name
    if folder == "eval":  # side-by-side evaluation settings
        assert first.startswith("# ragtune eval retrieval ") and f"-c configs/eval/{path.name}" in first
        load_config("retrieval", path)
        return
    assert first.startswith(f"# ragtune train {folder} -c configs/{folder}/{path.name}")
    load_config(folder, path)


def test_packaged_quickstart_config_validates():
    load_config("embed", ROOT / "src" / "ragtune" / "resources" / "quickstart.yaml")


def test_config_show_lists_every_option(cli):
    code, out, _ = cli("--json", "config", "show", "embed")
    rows = {r["key"]: r for r in json.loads(out)}
    assert code == 0 and rows["train.learning_rate"]["default"] == "5e-05"
    assert all(r["help"] for r in rows.values())
    assert {"model.name", "data.train", "data.eval", "output.dir", "loss", "matryoshka_dims", "prompts.query"} <= set(rows)


@pytest.mark.parametrize(("task", "heading"), [("embed", "ragtune train embed: options"),
                                              ("query", "query settings: options")])
def test_config_show_heading_names_the_command(cli, task, heading):
    code, out, err = cli("config", "show", task)
    assert code == 0 and heading in " ".join(out.split()), err


@pytest.mark.parametrize("task", sorted(TASKS))
def test_config_show_works_for_every_task(cli, task):
    code, out, err = cli("--json", "config", "show", task)
    assert code == 0, err
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows and all(r["help"] for r in rows.values())


@pytest.mark.parametrize(("name", "suggestion"), [("nme", "name"), ("top_k", "k"), ("k_top", "k"), ("zzz", None)])
def test_did_you_mean_by_spelling_or_by_a_word_of_the_name(name, suggestion):
    from ragtune.choices import did_you_mean

    hint = did_you_mean(name, ["name", "k", "mode"])
    assert hint == (f" (did you mean '{suggestion}'?)" if suggestion else "")


def test_an_unknown_query_setting_suggests_the_close_one():
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'top_k' \(did you mean 'k'\?\)"):
        load_config("query", None, ["top_k=3"])


@pytest.mark.parametrize(("override", "words"), [
    ("data.hard_negatives.short=sometimes", ["data.hard_negatives.short", "drop", "random"]),
    ("train.base_as_candidate=perhaps", ["train.base_as_candidate", "boolean"]),
    ("loss=gits", ["gits", "gist"]),
])
def test_the_new_embed_keys_refuse_bad_values_in_one_line(cli, pairs_file, tmp_path, override, words):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", f"output.dir={tmp_path / 'run'}", override)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()
