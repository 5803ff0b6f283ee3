"""CLaRa's model on a tiny Llama (issue 20): only the new token rows and the adapters train, each pass uses its own
adapter, the differentiable top-k is a hard top-k forward with a non-zero gradient, a stage-1 loss falls, and a
bad shape is one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragtune.clara.model import Clara, ClaraShape, use_adapter
from ragtune.clara.topk import select_top_k
from ragtune.errors import ConfigError

DOCS = [["the heart pumps blood through the body"], ["asthma attacks bring a chronic cough"],
        ["calcium intake builds bone density"], ["migraine pain ruins sleep quality"]]
QUESTIONS = ["what pumps blood?", "what brings a cough?", "what builds bone?", "what ruins sleep?"]
ANSWERS = ["the heart", "asthma attacks", "calcium intake", "migraine pain"]


def _clara(tiny_llm, logit_scale: float = 1.0, **kwargs) -> Clara:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    with torch.no_grad():
        base.get_output_embeddings().weight.mul_(logit_scale)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    return Clara.from_base(base, tokenizer, ClaraShape(compress_rate=4, doc_max_length=16), r=4, alpha=8, **kwargs)


def _step(clara: Clara, optimizer) -> dict:
    optimizer.zero_grad()
    out = clara.stage_loss(DOCS, QUESTIONS, ANSWERS)
    out["loss"].backward()
    optimizer.step()
    return out


def test_only_the_new_token_rows_and_both_adapters_train(tiny_llm):
    clara = _clara(tiny_llm)
    base = clara.model.get_base_model()
    first_new = min(clara.memory_ids)
    assert len(clara.memory_ids) == 4 and clara.slot_id == first_new + 4
    before = {n: p.detach().clone() for n, p in clara.model.named_parameters()}
    trainable = [p for p in clara.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)  # no weight decay: it would move the frozen rows
    for _ in range(3):
        _step(clara, optimizer)
    after = dict(clara.model.named_parameters())
    embed = next(n for n, p in after.items() if p is base.get_input_embeddings().weight)
    head = next(n for n, p in after.items() if p is base.get_output_embeddings().weight)
    for table in (embed, head):
        assert torch.equal(after[table][:first_new], before[table][:first_new]), table  # the base vocabulary
    assert not torch.equal(after[embed][first_new:], before[embed][first_new:])  # the memory tokens learned
    for adapter in ("compressor", "generator"):
        moved = [n for n in after if f"lora_B.{adapter}" in n and not torch.equal(after[n], before[n])]
        assert moved, adapter  # one step compresses with one adapter and answers with the other: both train
    frozen = [n for n in after if "lora_" not in n and n not in (embed, head)]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)


def test_each_pass_runs_its_own_adapter(tiny_llm):
    clara = _clara(tiny_llm)
    for name, param in clara.model.named_parameters():
        if "lora_B.compressor" in name:
            torch.nn.init.normal_(param, std=0.5)  # only the compressor adapter changes the model
    inputs = clara.document_inputs(["the heart pumps blood"])
    with torch.no_grad(), clara.model.disable_adapter():
        plain = clara.model(**inputs).logits
    with torch.no_grad():
        use_adapter(clara.model, "generator")
        generator = clara.model(**inputs).logits
        use_adapter(clara.model, "compressor")
        compressor = clara.model(**inputs).logits
    assert torch.allclose(generator, plain, atol=1e-6)  # the generator adapter (still zero) leaves the base as is
    assert not torch.allclose(compressor, plain, atol=1e-3)
    for text in ("a <memslot> b <mem0>", "plain"):  # user text never holds CLaRa's own tokens
        ids = clara.document_inputs([text])["input_ids"][0].tolist()
        assert ids.count(clara.slot_id) == 0 and ids[-4:] == clara.memory_ids
    memory, _ = clara.compress(["the heart pumps blood"])  # compress turns the compressor on by itself
    use_adapter(clara.model, "generator")
    again, _ = clara.compress(["the heart pumps blood"])
    assert torch.equal(memory, again)


def test_the_differentiable_top_k_is_a_hard_top_k_forward_with_a_gradient():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.7], [0.5, 0.2, 0.8, 0.1]], requires_grad=True)
    selection = select_top_k(scores, 2, temperature=0.1)
    expected = torch.tensor([[[0, 1, 0, 0], [0, 0, 0, 1]], [[0, 0, 1, 0], [1, 0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(selection.detach(), expected)
    values = torch.arange(8, dtype=torch.float32).reshape(1, 4, 2).repeat(2, 1, 1)
    picked = selection @ values  # (2, 2, 2): the chosen candidates, best first
    assert torch.equal(picked.detach()[0], values[0, [1, 3]])
    picked.sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="top_k"):
        select_top_k(scores, 5)


def test_a_stage_1_loss_falls_and_the_answer_comes_from_the_memory_vectors(tiny_llm):
    # a random tiny LM's frozen head gives logits of about +-0.1, so no hidden state can make it confident (the CE
    # floor is near ln(vocab)); a trained LM's head is larger, as it is made here
    clara = _clara(tiny_llm, logit_scale=30.0)
    optimizer = torch.optim.Adam([p for p in clara.model.parameters() if p.requires_grad], lr=1e-2)
    first = _step(clara, optimizer)
    for _ in range(40):
        last = _step(clara, optimizer)
    assert float(last["ce"]) < 0.5 * float(first["ce"]), (float(first["ce"]), float(last["ce"]))
    same = ["what is it about?"] * len(DOCS)  # one question for all: only the memory vectors tell the answers apart
    for _ in range(40):
        optimizer.zero_grad()
        clara.stage_loss(DOCS, same, ANSWERS)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        matched = float(clara.stage_loss(DOCS, same, ANSWERS)["ce"])
        swapped = float(clara.stage_loss(DOCS[1:] + DOCS[:1], same, ANSWERS)["ce"])
    assert swapped > matched + 1.0, (matched, swapped)
    assert isinstance(clara.answer(QUESTIONS[0], DOCS[0], max_new_tokens=4), str)


def test_a_bad_shape_or_a_base_without_room_is_one_clear_error(tiny_llm):
    with pytest.raises(ConfigError, match="compress_rate: 5 does not divide doc_max_length \\(16\\)"):
        ClaraShape(compress_rate=5, doc_max_length=16)
    with pytest.raises(ConfigError, match="positive integer"):
        ClaraShape(compress_rate=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    base.config.max_position_embeddings = 16
    with pytest.raises(ConfigError, match="do not fit the base model's 16 positions"):
        Clara.from_base(base, AutoTokenizer.from_pretrained(tiny_llm), ClaraShape(compress_rate=4, doc_max_length=16))


# ------------------------------------------------------------------------------------------ ragtune train clara
FACTS = [("the heart pumps blood through the body", "what pumps blood?", "the heart"),
         ("asthma attacks bring a chronic cough", "what brings a cough?", "asthma"),
         ("calcium intake builds bone density", "what builds bone?", "calcium"),
         ("migraine pain ruins sleep quality", "what ruins sleep?", "migraine"),
         ("statins lower cholesterol in the blood", "what lowers cholesterol?", "statins"),
         ("insulin controls blood sugar levels", "what controls blood sugar?", "insulin")]


def _records(tmp_path, stage: str) -> Path:
    import json

    rows = []
    for i, (doc, question, answer) in enumerate(FACTS * 3):
        if stage == "e2e":
            others = [FACTS[(i + j) % len(FACTS)][0] for j in range(1, 4)]
            rows.append({"candidates": others[:1] + [doc] + others[1:], "question": question, "answer": answer,
                         "positives": [1]})
        else:
            rows.append({"documents": [doc], "question": question, "answer": answer})
    path = tmp_path / f"{stage}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _stage(cli, tiny_llm, tmp_path, stage: str, *extra) -> Path:
    out = tmp_path / f"run-{stage}"
    model = [f"model.name={tiny_llm}"] if stage == "compress" else [f"init_from={tmp_path / 'run-compress'}" if
                                                                     stage == "instruct" else
                                                                     f"init_from={tmp_path / 'run-instruct'}"]
    code, _, err = cli("train", "clara", f"stage={stage}", *model, f"data.train={_records(tmp_path, stage)}",
                       f"output.dir={out}", "compress_rate=4", "doc_max_length=16", "lora.r=4", "lora.alpha=8",
                       "train.max_steps=6", "train.eval_steps=3", "train.save_steps=3", "train.learning_rate=5e-3",
                       "train.per_device_train_batch_size=4", "eval.generation_samples=2", "eval.max_new_tokens=4",
                       "top_k=2", "candidates=4", "--allow-regression", *extra)
    assert code == 0, err
    return out


def test_three_stages_run_and_the_saved_run_reloads_and_answers(cli, tiny_llm, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from tests.unit.test_chunk import error_line

    for stage in ("compress", "instruct", "e2e"):
        extra = ["train.gradient_checkpointing=true"] if stage == "instruct" else []
        out = _stage(cli, tiny_llm, tmp_path, stage, *extra)
        before = json.loads((out / "eval_before.json").read_text())["metrics"]
        after = json.loads((out / "eval_after.json").read_text())["metrics"]
        assert before["perplexity"] > 0 and after["perplexity"] > 0 and "f1" in after, stage
        info = json.loads((out / "final" / "clara.json").read_text())
        assert info["base"] == tiny_llm and info["compress_rate"] == 4
        assert set(info["adapters"]) == ({"compressor", "generator", "query"} if stage == "e2e" else
                                         {"compressor", "generator"})
        assert (out / "summary.md").is_file() and (out / "report.html").is_file()
    assert "recall@2" in after and after["first_stage_recall@2"] == 1.0  # the gold one is 2nd of every list
    error_line(cli("train", "clara", "stage=e2e", f"init_from={tmp_path / 'run-compress'}",
                   f"data.train={_records(tmp_path, 'e2e')}", f"output.dir={tmp_path / 'skipped'}"),
               "stage-compress run", "starts from the instruct stage's run")
    clara = Clara.load(out / "final", AutoModelForCausalLM.from_pretrained(tiny_llm))
    assert isinstance(clara.answer("what pumps blood?", [FACTS[0][0]], max_new_tokens=3), str)
    assert sorted(clara.rank("what pumps blood?", [f[0] for f in FACTS])) == list(range(len(FACTS)))


def test_clara_bad_input_is_one_line(cli, tiny_llm, tmp_path):
    from tests.unit.test_chunk import error_line

    base = ["train", "clara", f"data.train={_records(tmp_path, 'compress')}", f"output.dir={tmp_path / 'x'}"]
    error_line(cli(*base, "stage=instruct"), "init_from")
    error_line(cli(*base, f"model.name={tiny_llm}", "compress_rate=5", "doc_max_length=16"), "compress_rate",
               "does not divide")
    error_line(cli(*base, "stage=instruct", f"init_from={tmp_path}"), "not a finished `ragtune train clara` run")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"documents": ["a"], "question": "q"}\n', encoding="utf-8")
    error_line(cli("train", "clara", f"data.train={broken}", f"model.name={tiny_llm}",
                   f"output.dir={tmp_path / 'y'}"), "broken.jsonl:1", "answer")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"documents": "not a list", "question": "q", "answer": "a"}\n', encoding="utf-8")
    error_line(cli("train", "clara", f"data.train={wrong}", f"model.name={tiny_llm}",
                   f"output.dir={tmp_path / 'z'}"), "wrong.jsonl:1", "documents")


def test_a_stage_resumes_after_kill_9_and_ends_where_a_straight_run_does(cli, tiny_llm, tmp_path):
    from safetensors.torch import load_file

    from tests.conftest import run_killed_at_step_2

    data = _records(tmp_path, "compress")
    common = ["train", "clara", f"model.name={tiny_llm}", f"data.train={data}", "compress_rate=4",
              "doc_max_length=16", "lora.r=4", "lora.alpha=8", "train.max_steps=4", "train.eval_steps=2",
              "train.save_steps=2", "train.learning_rate=5e-3", "train.per_device_train_batch_size=4",
              "eval.generation_samples=1", "eval.max_new_tokens=2", "--allow-regression"]
    code, _, err = cli(*common, f"output.dir={tmp_path / 'straight'}")
    assert code == 0, err
    killed = tmp_path / "killed"
    run_killed_at_step_2([*common, f"output.dir={killed}"], killed)
    code, _, err = cli(*common, f"output.dir={killed}", "--resume")
    assert code == 0, err
    for name in ("memory_rows.safetensors", "adapters/compressor/adapter_model.safetensors",
                 "adapters/generator/adapter_model.safetensors"):
        straight, resumed = load_file(tmp_path / "straight" / "final" / name), load_file(killed / "final" / name)
        assert straight.keys() == resumed.keys(), name
        for key in straight:
            torch.testing.assert_close(straight[key], resumed[key], atol=1e-4, rtol=1e-3)


def test_data_clara_writes_each_stages_records_from_a_labelled_qa_set(cli, tiny_embedder, tmp_path):
    import json

    from tests.unit.test_chunk import error_line
    from tests.unit.test_rag import beir_dir

    data = beir_dir(tmp_path / "beir", long_answer="It does. Second sentence here. A third one.", train_split=True)
    written = {}
    for stage in ("compress", "instruct", "e2e"):
        out = tmp_path / f"{stage}.jsonl"
        pipeline = f"dense:{tiny_embedder}" if stage == "e2e" else "bm25"  # dense ranks every passage
        code, _, err = cli("data", "clara", str(data), "-o", str(out), "--stage", stage, "-k", "2", "--candidates",
                           "4", "-p", pipeline)
        assert code == 0, err
        written[stage] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["documents"] for r in written["compress"]][0] == [json.loads(
        (data / "corpus.jsonl").read_text().splitlines()[0])["text"]]  # q1's gold passage
    assert all(1 <= len(r["documents"]) <= 2 for r in written["instruct"]) and len(written["instruct"]) == 4
    e2e = written["e2e"]
    corpus = [json.loads(line)["text"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    assert len(e2e) == 4 and all(len(r["candidates"]) == 4 for r in e2e)
    for i, r in enumerate(e2e):  # q(i+1)'s gold passage is d(i+1): a positive when it is among the candidates
        assert [r["candidates"][p] for p in r["positives"]] == ([corpus[i]] if corpus[i] in r["candidates"] else [])
    assert e2e[0]["answer"] == "Yes. It does. Second sentence here." and e2e[1]["answer"].startswith("No.")
    from ragtune.data.clara import record
    from ragtune.ingest.readers import read_rows

    assert [record(r, "e2e", 4).positives for r in read_rows(tmp_path / "e2e.jsonl")] == [r["positives"] for r in e2e]
    error_line(cli("data", "clara", str(data), "-o", str(tmp_path / "x.jsonl"), "--stage", "stage4"), "stage4")
    error_line(cli("data", "clara", str(data), "-o", str(tmp_path / "x.jsonl"), "-p", "sparse"), "sparse")


def test_a_clara_run_answers_in_query_and_eval_rag_from_compressed_passages(cli, tiny_llm, tiny_embedder, tmp_path):
    import json

    from tests.unit.test_index import build, make_docs
    from tests.unit.test_rag import beir_dir

    run = _stage(cli, tiny_llm, tmp_path, "compress")
    data = beir_dir(tmp_path / "beir")
    code, out, err = cli("--json", "eval", "rag", "--data", str(data), "-p", "bm25", "--generator", str(run), "-k", "2",
                         "--max-new-tokens", "3")
    assert code == 0, err
    systems = {s["name"]: s for s in json.loads(out)["systems"]}
    clara = next(s for name, s in systems.items() if str(run) in name)
    assert {"accuracy", "macro_f1", "recall@2"} <= set(clara["metrics"])
    index = tmp_path / "index"
    build(cli, make_docs(tmp_path / "docs"), index, tiny_embedder)
    code, out, err = cli("--json", "query", str(index), "what pumps blood?", "--generator", str(run), "-k", "2")
    assert code == 0, err
    answer = json.loads(out)
    assert isinstance(answer["answer"], str) and len(answer["sources"]) == 2
    from tests.unit.test_chunk import error_line

    error_line(cli("serve", str(index), "--generator", str(run)), "is a CLaRa run")


def test_an_index_stores_a_runs_memory_vectors_and_query_answers_from_them(cli, tiny_llm, tiny_embedder, tmp_path,
                                                                          monkeypatch):
    import json

    import numpy as np

    from ragtune.clara.generator import ClaraGenerator
    from ragtune.index.reader import Index
    from tests.unit.test_chunk import error_line
    from tests.unit.test_index import build, make_docs

    run = _stage(cli, tiny_llm, tmp_path, "compress")
    docs, index = make_docs(tmp_path / "docs"), tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--clara", str(run))
    opened = Index(index)
    info = opened.info()["clara"]
    assert info["memory_tokens"] == 4 and info["dtype"] == "fp16" and info["tokens"] == opened.size * 4
    generator = ClaraGenerator(str(run))
    ids = opened.ids()[:3]
    stored = opened.memory_for(generator, ids).numpy()
    fresh = np.stack(generator.memory_vectors([c.text for c in opened.chunks(ids)]))
    assert stored.shape == fresh.shape == (3, 4, generator.hidden_size)
    cosine = (stored * fresh).sum(-1) / np.linalg.norm(stored, axis=-1) / np.linalg.norm(fresh, axis=-1)
    assert cosine.min() > 0.99  # fp16 storage of the same compression
    other = _stage(cli, tiny_llm, tmp_path, "instruct")  # other weights: their own compression, not these vectors
    assert opened.memory_for(ClaraGenerator(str(other)), ids) is None
    opened.close()

    import ragtune.clara.model as clara_model

    def no_compression(*args, **kwargs):
        raise AssertionError("the query compressed passages that the index stores")

    with monkeypatch.context() as patched:
        patched.setattr(clara_model.Clara, "compress", no_compression)
        code, out, err = cli("--json", "query", str(index), "what pumps blood?", "--generator", str(run), "-k", "2")
        assert code == 0, err
        assert isinstance(json.loads(out)["answer"], str)

    extra = tmp_path / "more" / "kidney.txt"
    extra.parent.mkdir()
    extra.write_text("Kidney stones cause sharp back pain and blood in the urine.", encoding="utf-8")
    for change in (("add", str(index), str(extra)), ("delete", str(index), "--source", str(docs / "heart.txt")),
                   ("compact", str(index))):
        code, _, err = cli("index", *change)
        assert code == 0, err
        opened = Index(index)
        stored_rows = sum(seg.size for seg in opened.segments)  # deleted rows stay until a compaction
        assert opened.info()["clara"]["tokens"] == stored_rows * 4 and len(opened.stored("clara")) == stored_rows
        kidney = opened.ids_of_sources([str(extra)])
        np.testing.assert_allclose(opened.memory_for(generator, kidney).numpy(),
                                   np.stack(generator.memory_vectors([c.text for c in opened.chunks(kidney)])),
                                   rtol=0.05, atol=0.05)
        opened.close()
    error_line(cli("index", "build", str(docs), "--out", str(tmp_path / "i2"), "--embedder", tiny_embedder,
                   "--clara", tiny_embedder), "not a CLaRa run", "train clara")
    from ragtune.clara.generator import clara_folder
    from ragtune.clara.model import CLARA_FILE

    saved = clara_folder(str(run)) / CLARA_FILE  # the run retrained in place: its fingerprint changes
    saved.write_text(saved.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    later = tmp_path / "more" / "ear.txt"
    later.write_text("Ear infections cause pain and a fever in young children.", encoding="utf-8")
    error_line(cli("index", "add", str(index), str(later)), "CLaRa run", "has changed", "rebuild")
    final = clara_folder(str(run))
    final.rename(final.with_name("moved"))  # the run moved away after the build
    error_line(cli("index", "add", str(index), str(later)), "CLaRa run", "is gone", "--clara")
    final.with_name("moved").rename(final)
    import shutil

    version = index / (index / "CURRENT").read_text(encoding="utf-8").strip()
    shutil.rmtree(next(version.glob("s*/clara")))  # a damaged index: one segment lost its memory vectors
    error_line(cli("index", "delete", str(index), "--source", str(extra)), "clara", "missing")
