"""`ragtune train embed --recipe auto`: trials on the dev split within a budget, the winner as final/."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_train_overrides


def test_every_trial_runs_and_the_best_on_dev_is_final(cli, tiny_embedder, pairs_file, tmp_path):
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    code, out, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                         "train.learning_rate=1e-2", "--recipe", "auto", "--budget", "1h", "--allow-regression")
    assert code == 0, err
    auto = json.loads((run_dir / "auto.json").read_text())
    assert list(auto["trials"]) == ["as configured", "lr x2.5", "no mining", "lr x2.5, no mining"]
    assert auto["skipped_over_budget"] == [] and auto["budget_s"] == 3600
    trials = auto["trials"]
    assert trials["lr x2.5"]["learning_rate"] == pytest.approx(2.5e-2)
    assert trials["no mining"]["hard_negatives"] is False and trials["as configured"]["hard_negatives"] is True
    assert len({json.dumps(t["before"], sort_keys=True) for t in trials.values()}) == 1  # one dev split for all
    tuned = {n: t["after"]["ndcg@10"] for n, t in trials.items() if not t["kept_base"]}
    if auto["winner"] is None:
        assert not tuned and "no trial beat the base model" in auto["why"]
    else:
        assert auto["winner"] == max(tuned, key=tuned.get) and auto["winner"] in auto["why"]
    chosen = trials[auto["winner"] or "as configured"]["run_dir"]
    final, expected = load_file(run_dir / "final" / "model.safetensors"), load_file(f"{chosen}/final/model.safetensors")
    assert final.keys() == expected.keys() and all(final[k].equal(expected[k]) for k in final)
    assert "recipe auto:" in " ".join(out.split())
    after = json.loads((run_dir / "eval_after.json").read_text())
    assert after["trial"] == auto["winner"] and "Verdict" in (run_dir / "summary.md").read_text()
    assert "| p |" in (run_dir / "summary.md").read_text()  # the paired test over the chosen trial's dev queries


def test_a_short_budget_runs_the_configured_trial_only(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "--recipe", "auto", "--budget", "1s", "--allow-regression")
    assert code == 0, err
    auto = json.loads((run_dir / "auto.json").read_text())
    assert list(auto["trials"]) == ["as configured"]
    assert auto["skipped_over_budget"] == ["lr x2.5", "no mining", "lr x2.5, no mining"]
    assert (run_dir / "final" / "modules.json").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--recipe", "fast"], "unknown --recipe 'fast'"),
    (["--recipe", "auto", "--budget", "soon"], "--budget 'soon' is not a duration"),
    (["--budget", "20m"], "--budget is for --recipe auto"),
])
def test_bad_recipe_flags_are_one_line(cli, tiny_embedder, pairs_file, tmp_path, args, message):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_budget_durations():
    from ragtune.errors import ConfigError
    from ragtune.train.auto_recipe import parse_budget

    assert parse_budget("20m") == 1200 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45 and parse_budget(None) is None
    for bad in ("0m", "-5m", "20 minutes", ""):
        with pytest.raises(ConfigError):
            parse_budget(bad)
