"""`ragtune train rerank` end to end on the tiny cross-encoder: artifacts, every loss, before/after, refusals, resume."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import TOPICS, lift_first_evaluation, run_killed_at_step_2, write_jsonl


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _eval(run_dir, which):
    return json.loads((run_dir / f"eval_{which}.json").read_text())


def tiny_rerank_overrides(model: str, out, steps: int = 2) -> list[str]:
    """Overrides that make `train rerank` take seconds on the tiny cross-encoder."""
    return [f"model.name={model}", f"output.dir={out}", f"train.max_steps={steps}", "train.eval_steps=2",
            "train.save_steps=2", "train.per_device_train_batch_size=4", "train.logging_steps=1",
            "eval.batch_size=16", "eval.rerank_k=10"]


def _docs(topic: str, i: int) -> tuple[str, list[str]]:
    """A topic's document and two documents from other topics."""
    names = list(TOPICS)
    phrase = TOPICS[topic][i % 5]
    others = [names[(names.index(topic) + k) % len(names)] for k in (1, 2)]
    return (f"a study of {topic} {phrase} finds {i}",
            [f"a study of {o} {TOPICS[o][i % 5]} finds {i}" for o in others])


def _query(topic: str, i: int) -> str:
    return f"what about {TOPICS[topic][i % 5]} in {topic} number {i}"


def labelled_pairs(n: int = 4) -> list[dict]:
    """query/document/label rows: each query has one positive (1) and two negatives (0)."""
    rows = []
    for topic in TOPICS:
        for i in range(n):
            positive, negatives = _docs(topic, i)
            rows.append({"query": _query(topic, i), "document": positive, "label": 1})
            rows.extend({"query": _query(topic, i), "document": d, "label": 0} for d in negatives)
    return rows


def triplets(n: int = 4) -> list[dict]:
    rows = []
    for topic in TOPICS:
        for i in range(n):
            positive, negatives = _docs(topic, i)
            rows.append({"query": _query(topic, i), "positive": positive, "negatives": negatives})
    return rows


def test_train_rerank_on_pairs_with_mined_negatives_writes_the_run_directory(cli, tiny_cross_encoder, pairs_file,
                                                                             tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = cli("train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder,
                         run_dir), "--allow-regression")
    assert code == 0, err
    for name in ("config.yaml", "metrics.jsonl", "progress.json", "eval_before.json", "eval_after.json",
                 "summary.md", "train.log", "final/config.json"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "final").is_dir()
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["step"] == progress["total"] == 2 and progress["best"]["metric"] == "ndcg@10"
    log = (run_dir / "train.log").read_text()
    assert "hard negatives: kept" in log and "pointwise training rows" in log  # bm25 mined the negatives
    assert "ndcg@10" in out

    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(run_dir / "final"), device="cpu")
    scores = model.predict([("what about asthma attack", "a study of lung asthma attack")])
    assert len(scores) == 1 and math.isfinite(float(scores[0]))


def test_labelled_pairs_train_without_mining(cli, tiny_cross_encoder, tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", labelled_pairs())
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={data}", "data.hard_negatives=null",
                       *tiny_rerank_overrides(tiny_cross_encoder, run_dir), "--allow-regression")
    assert code == 0, err
    log = (run_dir / "train.log").read_text()
    assert "hard negatives" not in log
    # 24 queries x 3 judged documents, less the held-out queries
    train_rows = int(log.split(" pointwise training rows")[0].rsplit("data: ", 1)[1])
    assert 0 < train_rows < 72 and train_rows % 3 == 0
    assert (run_dir / "final" / "config.json").exists()


def test_num_layers_trains_and_saves_a_shallower_reranker(cli, tiny_cross_encoder, tmp_path):
    # The tiny cross-encoder has 2 layers; the first one alone is a reranker with half the compute per pair.
    data = write_jsonl(tmp_path / "labelled.jsonl", labelled_pairs())
    run_dir = tmp_path / "run"
    code, out, err = cli("train", "rerank", f"data.train={data}", "data.hard_negatives=null", "model.num_layers=1",
                         *tiny_rerank_overrides(tiny_cross_encoder, run_dir), "--allow-regression")
    assert code == 0, err
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(run_dir / "final"), device="cpu")
    assert model.model.config.num_hidden_layers == 1 and len(model.model.bert.encoder.layer) == 1
    assert math.isfinite(float(model.predict([("a query", "a document")])[0]))
    assert "its first 1 layers" in (run_dir / "summary.md").read_text()


def test_num_layers_deeper_than_the_model_is_refused(cli, tiny_cross_encoder, tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", labelled_pairs())
    code, _, err = cli("train", "rerank", f"data.train={data}", "data.hard_negatives=null", "model.num_layers=3",
                       *tiny_rerank_overrides(tiny_cross_encoder, tmp_path / "run"))
    assert code == 2 and "model.num_layers=3" in err and "only 2 transformer layers" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("loss", "layout", "rows", "extra"), [
    ("bce", "pointwise", labelled_pairs, []),
    ("mnrl", "tuples", triplets, []),
    ("listnet", "listwise", labelled_pairs, []),
    ("lambdaloss", "listwise", triplets, []),
    ("margin_mse", "tuples", triplets, ["teacher"]),
])
def test_every_loss_trains_on_data_of_its_layout(cli, tiny_cross_encoder, tmp_path, loss, layout, rows, extra):
    from ragtune.train.rerank_losses import RERANK_LOSSES

    assert RERANK_LOSSES[loss].layout == layout
    data = write_jsonl(tmp_path / "data.jsonl", rows())
    run_dir = tmp_path / "run"
    teacher = [f"teacher={tiny_cross_encoder}"] if "teacher" in extra else []
    code, _, err = cli("train", "rerank", f"data.train={data}", f"loss={loss}", "data.hard_negatives=null", *teacher,
                       *tiny_rerank_overrides(tiny_cross_encoder, run_dir), "--allow-regression")
    assert code == 0, err
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert f"{layout} training rows" in (run_dir / "train.log").read_text()
    assert f"**loss**: {loss}" in (run_dir / "summary.md").read_text()


def graded_pairs() -> list[dict]:
    """labelled_pairs with a middle grade: the first negative of each query is judged 0.5."""
    rows = labelled_pairs()
    for i in range(1, len(rows), 3):
        rows[i]["label"] = 0.5
    return rows


def test_a_plain_encoder_with_a_new_head_trains_on_graded_labels(cli, tiny_embedder, tmp_path):
    # The default path of the issue: an encoder checkpoint (no scoring head) becomes a cross-encoder.
    data = write_jsonl(tmp_path / "graded.jsonl", graded_pairs())
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={data}", "data.hard_negatives=null",
                       *tiny_rerank_overrides(tiny_embedder, run_dir), "--allow-regression")
    assert code == 0, err
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(run_dir / "final"), device="cpu")
    assert model.num_labels == 1 and math.isfinite(float(model.predict([("a query", "a document")])[0]))


def test_graded_labels_by_layout():
    from ragtune.data.formats import Examples
    from ragtune.data.rerank import groups_from_examples, rerank_rows

    rows = [{"sentence1": r["query"], "sentence2": r["document"], "score": float(r["label"])} for r in graded_pairs()]
    groups = groups_from_examples(Examples("scored_pairs", ["sentence1", "sentence2", "score"], rows,
                                           [f"graded.jsonl:{i + 1}" for i in range(len(rows))]))
    pointwise = rerank_rows(groups, "pointwise")
    assert sorted({r["label"] for r in pointwise}) == [0.0, 0.5, 1.0] and len(pointwise) == len(rows)
    listwise = rerank_rows(groups, "listwise")
    assert all(sorted(r["labels"]) == [0.0, 0.5, 1.0] for r in listwise)
    tuples = rerank_rows(groups, "tuples")  # the 0.5 document is neither the positive nor a negative
    assert len(tuples) == len(groups) and all(set(r) == {"query", "positive", "negative_1"} for r in tuples)
    graded = {(r["sentence1"], r["sentence2"]) for r in rows if r["score"] == 0.5}
    assert not graded & {(r["query"], r["negative_1"]) for r in tuples}
    assert not graded & {(r["query"], r["positive"]) for r in tuples}


def test_every_loss_is_covered_above():
    from ragtune.train.rerank_losses import RERANK_LOSSES

    assert set(RERANK_LOSSES) == {"bce", "mnrl", "listnet", "lambdaloss", "margin_mse"}


def test_before_is_the_first_stage_and_after_adds_the_reranker(cli, tiny_cross_encoder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder,
                       run_dir), "eval.rerank_k=5", "--allow-regression")
    assert code == 0, err
    before, after = _eval(run_dir, "before"), _eval(run_dir, "after")
    assert before["model"] == "bm25" and after["model"] == str(run_dir / "final")
    assert "ndcg@10" in before["metrics"] and "ndcg@10" in after["metrics"]
    summary = (run_dir / "summary.md").read_text()
    assert "**before**: bm25 alone" in summary
    assert "**after**: bm25 + reranker over the top 5" in summary


def test_reranking_only_the_top_one_leaves_the_first_stage_ranking(cli, tiny_cross_encoder, pairs_file, tmp_path):
    # One candidate reranked is no reordering at all: the tail keeps its first-stage order, so after == before.
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder,
                       run_dir), "eval.rerank_k=1", "--allow-regression")
    assert code == 0, err
    before, after = _eval(run_dir, "before")["metrics"], _eval(run_dir, "after")["metrics"]
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert after[name] == pytest.approx(value, abs=1e-6), name
    assert "top 1" in (run_dir / "summary.md").read_text()


def test_margin_mse_without_a_teacher_is_refused(cli, tiny_cross_encoder, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", triplets())
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={data}", "loss=margin_mse", "data.hard_negatives=null",
                       *tiny_rerank_overrides(tiny_cross_encoder, run_dir))
    assert code == 2 and "teacher" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_unknown_loss_suggests_the_closest(cli, tiny_cross_encoder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={pairs_file}", "loss=lamdaloss",
                       *tiny_rerank_overrides(tiny_cross_encoder, run_dir))
    assert code == 2 and "did you mean 'lambdaloss'" in err
    assert len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_resume_after_kill_reaches_the_end(cli, tiny_cross_encoder, pairs_file, tmp_path):
    killed = tmp_path / "killed"
    args = ["train", "rerank", f"data.train={pairs_file}", *tiny_rerank_overrides(tiny_cross_encoder, killed, steps=4),
            "--allow-regression"]
    run_killed_at_step_2(args, killed)

    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    progress = json.loads((killed / "progress.json").read_text())
    assert progress["step"] == progress["total"] == 4
    steps = [m["step"] for m in _metrics(killed) if "loss" in m]
    assert steps[-1] == 4 and {3, 4} <= set(steps)
    assert (killed / "eval_after.json").exists()

    from sentence_transformers import CrossEncoder

    score = CrossEncoder(str(killed / "final"), device="cpu").predict([("bone density", "a study of bone density")])
    assert math.isfinite(float(score[0]))


def test_the_best_evaluation_is_the_model_in_final(cli, tiny_cross_encoder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import ragtune.train.rerank as recipe

    lift_first_evaluation(monkeypatch, recipe, "rerank_evaluator")
    data = tmp_path / "train.jsonl"
    write_jsonl(data, labelled_pairs(6))
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "rerank", f"data.train={data}", *tiny_rerank_overrides(tiny_cross_encoder, run_dir, 6),
                       "train.learning_rate=3e-3", "train.save_total_limit=10", "--allow-regression")
    assert code == 0, err
    evals = [(m["step"], m["eval_ndcg@10"]) for m in _metrics(run_dir) if "eval_ndcg@10" in m]
    assert [step for step, _ in evals] == [2, 4, 6] and evals[0][1] >= 2  # lifted: the best, and not the last
    after = _eval(run_dir, "after")
    assert after["best_step"] == 2 and after["metrics"]["ndcg@10"] == pytest.approx(evals[0][1])  # as logged
    final = load_file(run_dir / "final" / "model.safetensors")
    chosen = load_file(run_dir / "checkpoints" / "checkpoint-2" / "model.safetensors")
    last = load_file(run_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    assert final.keys() == chosen.keys() and all((final[k] == chosen[k]).all() for k in final)
    assert any((final[k] != last[k]).any() for k in final)  # lr 3e-3 moved the weights after step 2
