"""`ragtune train embed` end to end on the tiny model: artifacts, finite losses, reload, resume, refusals."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import lift_first_evaluation, run_killed_at_step_2, tiny_train_overrides, write_jsonl


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_embed_writes_the_run_directory(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                         "--allow-regression")
    assert code == 0, err
    for name in ("config.yaml", "metrics.jsonl", "progress.json", "eval_before.json", "eval_after.json",
                 "summary.md", "train.log", "final/README.md", "final/modules.json"):
        assert (run_dir / name).exists(), name
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["step"] == progress["total"] == 4 and progress["best"]["metric"] == "ndcg@10"
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    assert set(after) >= {"ndcg@10", "mrr@10", "map@100", "recall@100", "precision@1", "accuracy@5"}
    assert "Verdict" in (run_dir / "summary.md").read_text()
    assert "ndcg@10" in out
    # every metric of every eval query, before and after: the paired test behind the table's p column
    kept = [json.loads((run_dir / f"eval_{n}.json").read_text())["per_example"] for n in ("before", "after")]
    assert set(kept[0]) == set(kept[1]) == set(after) and len(kept[0]["ndcg@10"]) == 5
    assert sum(kept[1]["ndcg@10"].values()) / 5 == pytest.approx(after["ndcg@10"], abs=1e-6)
    assert "| metric | before | after | delta | p |" in (run_dir / "summary.md").read_text()
    assert "paired t-test over the 5 eval examples" in " ".join(out.split())
    assert "<th>p</th>" in (run_dir / "report.html").read_text()

    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(run_dir / "final"), device="cpu").encode(["what about asthma"])
    assert emb.shape == (1, 32)


def test_frozen_layers_stay_put_and_the_rest_trains(cli, tiny_embedder, pairs_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))  # the base model is encoded, not read back
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.freeze_layers=1", "model.dropout=0", "train.learning_rate=1e-2",
                       "train.base_as_candidate=false", "--allow-regression")
    assert code == 0, err
    base, tuned = load_file(f"{tiny_embedder}/model.safetensors"), load_file(run_dir / "final" / "model.safetensors")

    def weight(state, key):
        return next(v for k, v in state.items() if k.endswith(key))

    for frozen in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert weight(base, frozen).equal(weight(tuned, frozen)), frozen
    assert not weight(base, "encoder.layer.1.attention.self.query.weight").equal(
        weight(tuned, "encoder.layer.1.attention.self.query.weight"))
    assert "batches reused the base model's hidden states" in (run_dir / "train.log").read_text()


def test_freezing_every_layer_is_refused(cli, tiny_embedder, pairs_file, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder,
                       tmp_path / "run"), "train.freeze_layers=2")
    assert code == 2 and "leaves nothing to train" in err and "at most 1" in err
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused_without_overwrite(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "keep.txt").write_text("precious")
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (run_dir / "keep.txt").read_text() == "precious"


def test_regression_exits_nonzero_unless_allowed(cli, tiny_embedder, pairs_file, tmp_path):
    # A huge learning rate wrecks the tiny model, so the tuned model scores below its base.
    args = ["train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, tmp_path / "r1"),
            "train.learning_rate=5.0", "train.warmup_ratio=0"]
    code, out, err = cli(*args)
    summary = json.loads((tmp_path / "r1" / "eval_after.json").read_text())["metrics"]["ndcg@10"]
    before = json.loads((tmp_path / "r1" / "eval_before.json").read_text())["metrics"]["ndcg@10"]
    if summary >= before:
        pytest.skip("the wrecked model did not regress on this platform")
    assert code == 1 and "REGRESSION" in err
    code, _, _ = cli(*args, f"output.dir={tmp_path / 'r2'}", "--allow-regression")
    assert code == 0


@pytest.mark.parametrize(("loss", "rows"), [
    ("cached_mnrl", [{"query": f"q {i}", "positive": f"doc {i}", "negatives": [f"neg {i}", f"other {i}"]}
                     for i in range(24)]),
    ("cosent", [{"sentence1": f"s {i}", "sentence2": f"t {i % 5}", "score": (i % 5) / 4} for i in range(24)]),
    ("online_contrastive", [{"sentence1": f"s {i}", "sentence2": f"t {i % 3}", "score": float(i % 2)}
                            for i in range(24)]),
])
def test_losses_train_on_their_formats(cli, tiny_embedder, tmp_path, loss, rows):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    extra = ["loss_args.mini_batch_size=4"] if loss == "cached_mnrl" else []
    code, _, err = cli("train", "embed", f"data.train={data}", f"loss={loss}", *extra,
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run"), "--allow-regression")
    assert code == 0, err
    assert (tmp_path / "run" / "final" / "modules.json").exists()


def test_matryoshka_and_prompts(cli, tiny_embedder, pairs_file, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", "matryoshka_dims=[32,16,8]",
                       "prompts.query=query: ", "prompts.document=passage: ", "train.base_as_candidate=false",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run"), "--allow-regression")
    assert code == 0, err
    assert "MatryoshkaLoss" in (tmp_path / "run" / "final" / "README.md").read_text()


def test_incompatible_loss_fails_before_training(cli, tiny_embedder, pairs_file, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", "loss=cosent",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run"))
    assert code == 2 and "cosent" in err and "pairs" in err and "loss=mnrl" in err
    assert not (tmp_path / "run").exists()


def test_missing_model_is_one_line(cli, pairs_file, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", "model.name=nobody/no-such-model",
                       f"output.dir={tmp_path / 'run'}")
    assert code == 2 and "nobody/no-such-model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_resume_after_kill_reaches_the_same_end(cli, tiny_embedder, pairs_file, tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    common = [f"data.train={pairs_file}", "train.length_buckets=false", "train.base_as_candidate=false",
              "--allow-regression"]
    code, _, err = cli("train", "embed", *common, *tiny_train_overrides(tiny_embedder, tmp_path / "straight"))
    assert code == 0, err

    killed = tmp_path / "killed"
    args = ["train", "embed", *common, *tiny_train_overrides(tiny_embedder, killed)]
    run_killed_at_step_2(args, killed)

    code, out, err = cli(*args, "--resume")
    assert code == 0, err
    assert f"resumingfrom{killed / 'checkpoints' / 'checkpoint-2'}(step2)" in "".join(out.split())
    texts = ["what about asthma attack", "bone density study"]
    a = SentenceTransformer(str(tmp_path / "straight" / "final"), device="cpu").encode(texts)
    b = SentenceTransformer(str(killed / "final"), device="cpu").encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-4)
    steps = [m["step"] for m in _metrics(killed) if "loss" in m]
    assert steps[-1] == 4


def test_tensorboard_early_stopping_checkpointing_and_accumulation(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.report_to=[tensorboard]", "train.early_stopping_patience=1",
                       "train.gradient_checkpointing=true", "train.gradient_accumulation_steps=2",
                       "train.extra={max_grad_norm: 0.5}", "--allow-regression")
    assert code == 0, err
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert "max_grad_norm: 0.5" in (run_dir / "config.yaml").read_text()


def test_length_buckets_give_the_padded_batch_gradients(tiny_embedder):
    import torch
    from sentence_transformers import SentenceTransformer

    from ragtune.train.bucketing import length_bucketing

    model = SentenceTransformer(tiny_embedder, device="cpu")
    texts = ["short", "a much longer text about bone density and calcium intake in adults"] * 4 + ["mid length one"]
    features = model.tokenize(texts)

    def grads(bucketed: bool):
        model.zero_grad()
        with length_bucketing(model, bucketed, tokens_per_chunk=32):
            embeddings = model(dict(features))["sentence_embedding"]
        embeddings.pow(2).sum().backward()
        return embeddings.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_emb, plain_grads = grads(False)
    bucket_emb, bucket_grads = grads(True)
    torch.testing.assert_close(bucket_emb, plain_emb, atol=1e-5, rtol=1e-4)
    for a, b in zip(bucket_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert "forward" not in model.__dict__  # the wrapper is gone after training


def test_the_best_evaluation_is_the_model_in_final(cli, tiny_embedder, pairs_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import ragtune.train.embed as recipe

    lift_first_evaluation(monkeypatch, recipe, "ir_evaluator")

    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.max_steps=6", "train.learning_rate=2e-1", "train.save_total_limit=10",
                       "train.base_as_candidate=false", "loss=mnrl", "data.hard_negatives=null",
                       "--allow-regression")
    assert code == 0, err
    evals = [(m["step"], m["eval_ndcg@10"]) for m in _metrics(run_dir) if "eval_ndcg@10" in m]
    assert [step for step, _ in evals] == [2, 4, 6] and evals[0][1] >= 2  # lifted: the best, and not the last
    after = json.loads((run_dir / "eval_after.json").read_text())
    assert after["best_step"] == 2 and after["metrics"]["ndcg@10"] == pytest.approx(evals[0][1])  # as logged
    final = load_file(run_dir / "final" / "model.safetensors")
    chosen = load_file(run_dir / "checkpoints" / "checkpoint-2" / "model.safetensors")
    last = load_file(run_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    assert final.keys() == chosen.keys() and all((final[k] == chosen[k]).all() for k in final)
    assert any((final[k] != last[k]).any() for k in final)


def test_resume_without_a_complete_checkpoint_says_so(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # killed mid-save: no .complete marker
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "--resume", "--allow-regression")
    assert code == 0, err
    line = next(line for line in err.splitlines() if "--resume" in line)
    assert str(run_dir / "checkpoints") in line and "incomplete checkpoints (checkpoint-2)" in line
    assert "from step 0" in line


def test_no_checkpoint_beating_the_base_keeps_the_base_and_exits_nonzero(cli, tiny_embedder, pairs_file, tmp_path):
    from safetensors.torch import load_file

    # A huge learning rate wrecks the tiny model at every step, so the base model (step 0) stays the best candidate.
    args = ["train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, tmp_path / "r1"),
            "train.learning_rate=5.0", "train.warmup_ratio=0"]
    code, _, err = cli(*args)
    after = json.loads((tmp_path / "r1" / "eval_after.json").read_text())
    before = json.loads((tmp_path / "r1" / "eval_before.json").read_text())["metrics"]["ndcg@10"]
    if after["metrics"]["ndcg@10"] > before:
        pytest.skip("the wrecked model still beat its base on this platform")
    assert code == 1 and after["kept_base"] is True
    assert "no checkpoint beat the base model, so final/ is the base model" in " ".join(err.split())
    base, final = load_file(f"{tiny_embedder}/model.safetensors"), load_file(tmp_path / "r1" / "final" /
                                                                             "model.safetensors")
    assert base.keys() == final.keys() and all(base[k].equal(final[k]) for k in base)
    assert "final/ is the base model" in (tmp_path / "r1" / "summary.md").read_text()
    code, _, _ = cli(*args, f"output.dir={tmp_path / 'r2'}", "--allow-regression")
    assert code == 0 and json.loads((tmp_path / "r2" / "eval_after.json").read_text())["kept_base"] is True


def test_a_tuned_checkpoint_that_beats_the_base_is_kept(cli, tiny_embedder, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", *tiny_train_overrides(tiny_embedder, run_dir),
                       "train.max_steps=6", "train.learning_rate=2e-1", "--allow-regression")
    assert code == 0, err
    after = json.loads((run_dir / "eval_after.json").read_text())
    before = json.loads((run_dir / "eval_before.json").read_text())["metrics"]["ndcg@10"]
    assert (after["metrics"]["ndcg@10"] > before) == (not after["kept_base"])


def test_gist_masks_what_the_base_model_ranks_above_the_positive(tiny_embedder):
    import torch

    from ragtune.models.device import Placement
    from ragtune.models.load import load_embedder
    from ragtune.train.losses import build_loss

    model = load_embedder(tiny_embedder, Placement("cpu", "fp32", "test")).eval()
    loss = build_loss(model, "gist", {}, [])
    assert loss.guide is not model and not any(p.requires_grad for p in loss.guide.parameters())
    # The second row's positive is the first row's query itself: the base model ranks it above the first row's own
    # positive, so for the first query it is a false negative and leaves that query's softmax.
    anchors = ["asthma attack lung capacity", "bone density calcium intake", "skin rash sun exposure"]
    positives = ["a study of lung smoking damage", anchors[0], "wound healing of the skin"]
    features = [model.tokenize(anchors), model.tokenize(positives)]
    value = loss(features, None)
    with torch.no_grad():
        a, p = (torch.nn.functional.normalize(model(dict(f))["sentence_embedding"], dim=-1) for f in features)
        sims = a @ p.T
        masked = sims.clone()
        for i in range(3):
            masked[i][(sims[i] > sims[i, i]) & (torch.arange(3) != i)] = -torch.inf
        expected = torch.nn.functional.cross_entropy(masked / 0.05, torch.arange(3))
        plain = torch.nn.functional.cross_entropy(sims / 0.05, torch.arange(3))
    assert torch.isinf(masked[0, 1])
    assert value.item() == pytest.approx(expected.item(), rel=1e-4) and value.item() != pytest.approx(plain.item())


def test_gist_trains_and_refuses_rows_with_several_negatives(cli, tiny_embedder, pairs_file, tmp_path):
    code, _, err = cli("train", "embed", f"data.train={pairs_file}", "loss=gist",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run"), "--allow-regression")
    assert code == 0, err
    rows = [{"query": f"q {i}", "positive": f"doc {i}", "negatives": [f"neg {i}", f"other {i}"]} for i in range(24)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code, _, err = cli("train", "embed", f"data.train={data}", "loss=gist",
                       *tiny_train_overrides(tiny_embedder, tmp_path / "run2"))
    assert code == 2 and "at most 1 negative" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run2").exists()
