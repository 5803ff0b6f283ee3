"""The persistent index: build/info/query round trips, incremental `add`, `delete`, the on-disk layout (no pickle),
embedder and format-version checks, crash safety under SIGKILL, and readers during a write."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ragtune.errors import ModelError
from tests.unit.test_bad_input import _write
from tests.unit.test_chunk import error_line, text_pdf

REPO = Path(__file__).resolve().parents[2]
HEART = ("Cardiac arrest stops the heart. Blood pressure and artery plaque matter.\n\n"
         "Cholesterol levels rise with age, and heart rhythm can become irregular.\n")
LUNG = "# Lungs\n\nAn asthma attack brings a chronic cough.\n\n## Smoking\n\nSmoking damage lowers lung capacity.\n"
BRAIN = ("<html><head><title>Brain</title></head><body><h1>Brain</h1><p>Memory loss after a stroke; stroke recovery "
         "takes time.</p><p>Migraine pain ruins sleep quality.</p></body></html>")


def make_docs(folder: Path) -> Path:
    """Five files on separate topics: .txt, .md, .html, a two-page .pdf and a two-record .jsonl."""
    _write(folder / "heart.txt", HEART)
    _write(folder / "lung.md", LUNG)
    _write(folder / "brain.html", BRAIN)
    _write(folder / "bone.pdf", text_pdf(["Bone density depends on calcium intake",
                                          "Fracture healing and joint pain in the spine"], title="Bones"))
    _write(folder / "gut.jsonl", json.dumps({"text": "Gut bacteria protect against a stomach ulcer.", "id": "g1"})
           + "\n" + json.dumps({"text": "Liver enzymes and food allergy tests.", "id": "g2"}) + "\n")
    return folder


def build(cli, docs, index, embedder, *extra) -> dict:
    code, out, err = cli("--json", "index", "build", docs, "--out", index, "--embedder", embedder,
                         "--chunk-size", "24", "--overlap", "4", *extra)
    assert code == 0, err
    return json.loads(out)


def ask(cli, index, question, *extra) -> dict:
    code, out, err = cli("--json", "query", index, question, "--no-generate", *extra)
    assert code == 0, err
    return json.loads(out)


def info(cli, index) -> dict:
    code, out, err = cli("--json", "index", "info", index)
    assert code == 0, err
    return json.loads(out)


def all_chunks(index_path) -> dict[str, tuple[str, str]]:
    """id -> (source, text) of every live chunk, read straight from the live version's SQLite files: each
    segment's chunks less the ones state.sqlite marks deleted."""
    from ragtune.index.store import current_version as _current

    version = _current(Path(index_path))
    with sqlite3.connect(version / "state.sqlite") as state:
        deleted = set(state.execute("SELECT segment, id FROM deleted"))
    out = {}
    for name in json.loads((version / "manifest.json").read_text())["segments"]:
        with sqlite3.connect(version / name / "chunks.sqlite") as db:
            out.update({i: (s, t) for i, s, t in db.execute("SELECT id, source, text FROM chunks")
                        if (name, i) not in deleted})
    return out


@pytest.fixture
def docs(tmp_path) -> Path:
    return make_docs(tmp_path / "docs")


@pytest.fixture
def built(cli, docs, tiny_embedder, tmp_path) -> Path:
    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder)
    return index


def perturbed_copy(embedder: str, out: Path) -> str:
    """The same architecture and tokenizer with different weights."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(embedder, out)
    weights = load_file(out / "model.safetensors")
    torch.manual_seed(1)
    save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()},
              out / "model.safetensors", metadata={"format": "pt"})
    return str(out)


def hub_snapshot(monkeypatch, tmp_path: Path, repo_id: str, folder: str) -> str:
    """`folder` placed in a private HF cache as the snapshot of `repo_id`, the way the hub leaves a download."""
    import huggingface_hub.constants as constants

    cache, revision = tmp_path / "hub", "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    _write(repo / "refs" / "main", revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return repo_id


# --------------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_build_info_query_round_trip(cli, docs, tiny_embedder, tmp_path, mode):
    index = tmp_path / "index"
    report = build(cli, docs, index, tiny_embedder, *(["-c", _write(tmp_path / "r.yaml", "dense:\n  index: hnsw\n")]
                                                       if mode == "dense" else []))
    chunks = all_chunks(index)
    assert report["chunks_added"] == len(chunks) > 5
    assert sorted(report["added_sources"]) == sorted(str(p) for p in docs.iterdir())
    details = info(cli, index)
    assert details["version"] == "v000001" and details["format_version"] == 2
    assert details["sources"] == 5 and details["chunks"] == len(chunks)
    assert details["embedder"] == tiny_embedder and details["dimension"] == 32
    assert details["chunker"] == {"chunk_size": 24, "overlap": 4, "tokens": tiny_embedder, "text_field": "text",
                                  "pdf_layout": False}

    for chunk_id, (source, text) in list(chunks.items())[:4]:  # a chunk's own text finds that chunk first
        answer = ask(cli, index, text, f"first_stage={mode}", "-k", "3")
        assert answer["answer"] is None
        top = answer["sources"][0]
        assert (top["id"], top["source"], top["text"]) == (chunk_id, source, text)
        assert [s["n"] for s in answer["sources"]] == list(range(1, len(answer["sources"]) + 1))
        if mode == "dense":
            assert top["score"] == pytest.approx(1.0, abs=1e-3)
    if mode != "dense":
        answer = ask(cli, index, "calcium intake", f"first_stage={mode}", "-k", "2")
        top = answer["sources"][0]
        assert top["source"] == str(docs / "bone.pdf") and top["page"] == 1 and top["title"] == "Bones"


def test_a_file_named_twice_is_indexed_once(cli, docs, tiny_embedder, tmp_path):
    index = tmp_path / "index"
    report = build(cli, docs, index, tiny_embedder)
    once = all_chunks(index)
    code, out, err = cli("--json", "index", "build", docs, docs / "heart.txt", docs, "--out", tmp_path / "twice",
                         "--embedder", tiny_embedder, "--chunk-size", "24", "--overlap", "4")
    assert code == 0, err
    assert json.loads(out)["chunks_added"] == report["chunks_added"] and all_chunks(tmp_path / "twice") == once


def test_human_output_of_info_and_query(cli, built):
    code, out, err = cli("index", "info", built)
    assert code == 0, err
    assert "v000001" in out and "chunks" in out
    code, out, err = cli("query", built, "stroke recovery", "--no-generate", "-k", "2")
    assert code == 0, err
    assert out.lstrip().startswith("sources") and "│ 1 │" in out and "│ 2 │" in out and "│ 3 │" not in out


def test_layout_has_no_pickle_anywhere(cli, built, docs, tiny_embedder):
    _write(docs / "extra.txt", "Sun exposure and skin cancer.")
    assert cli("index", "add", built, docs)[0] == 0
    assert cli("index", "delete", built, "--source", str(docs / "heart.txt"))[0] == 0
    assert (built / "CURRENT").read_text() == "v000003"
    files = [p for p in built.rglob("*") if p.is_file()]
    names = {p.relative_to(built / "v000003").as_posix() for p in files if "v000003" in p.parts}
    assert {"manifest.json", "state.sqlite", "s000001/chunks.sqlite", "s000001/faiss.index",
            "s000001/bm25/ragtune_bm25.json", "s000002/chunks.sqlite", "s000002/faiss.index"} <= names
    for path in files:
        assert path.suffix not in (".pkl", ".pickle", ".pt", ".bin"), path
        head = path.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), path  # pickle
    import numpy as np

    for npy in built.rglob("*.npy"):
        np.load(npy, allow_pickle=False)
    manifest = json.loads((built / "v000003" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["embedder"]["fingerprint"]
    assert not list(built.glob(".staging-*"))
    # the version just replaced stays for readers still opening it; older ones go
    assert sorted(p.name for p in built.glob("v0*")) == ["v000002", "v000003"]


# ------------------------------------------------------------------------------------------------------- add
def test_add_reindexes_only_new_and_changed_files(cli, built, docs, tiny_embedder, monkeypatch):
    from ragtune.index import Index
    from ragtune.ingest.chunk import Chunker, chunk_files
    from ragtune.retrieval.dense import DenseRetriever

    before = all_chunks(built)
    heart_before = {i for i, (s, _) in before.items() if s.endswith("heart.txt")}
    _write(docs / "heart.txt", HEART.replace("irregular", "irregular after a marathon"))
    _write(docs / "skin.md", "# Skin\n\nSun exposure causes a skin rash; wound healing is slow.\n")
    encoded: list[str] = []
    original = DenseRetriever.encode_documents

    def spy(self, texts, *args, **kwargs):
        encoded.extend(texts)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(DenseRetriever, "encode_documents", spy)
    code, out, err = cli("--json", "index", "add", built, docs)
    assert code == 0, err
    report = json.loads(out)
    assert report["changed_sources"] == [str(docs / "heart.txt")]
    assert report["added_sources"] == [str(docs / "skin.md")]
    assert sorted(report["unchanged_sources"]) == sorted(str(docs / n) for n in ("bone.pdf", "brain.html",
                                                                                  "gut.jsonl", "lung.md"))
    from transformers import AutoTokenizer

    expected, _ = chunk_files([docs / "heart.txt", docs / "skin.md"],
                              Chunker(24, 4, AutoTokenizer.from_pretrained(tiny_embedder)))
    assert report["chunks_added"] == len(expected) and sorted(encoded) == sorted(c.text for c in expected)
    assert report["chunks_removed"] == len(heart_before)

    after = all_chunks(built)
    assert {i for i in before if i not in heart_before} <= set(after)  # other files keep their chunks and ids
    assert not heart_before & set(after) or all(before[i] == after[i] for i in heart_before & set(after))
    assert len(after) == len(before) - len(heart_before) + len(expected)
    details = info(cli, built)
    assert details["version"] == "v000002" and details["sources"] == 6 and details["chunks"] == len(after)
    assert ask(cli, built, "marathon", "first_stage=bm25", "-k", "1")["sources"][0]["source"] == str(docs / "heart.txt")
    assert ask(cli, built, "skin rash wound", "first_stage=bm25", "-k", "1")["sources"][0]["source"] == str(docs / "skin.md")
    index = Index(built)
    for chunk_id, (_, text) in after.items():  # every vector, old or new, is on the row of its chunk
        assert index.search(text, 1, "dense")[0][0] == chunk_id
    index.close()

    encoded.clear()  # nothing changed: nothing is encoded, every source is unchanged
    code, out, err = cli("--json", "index", "add", built, docs)
    assert code == 0, err
    report = json.loads(out)
    assert report["chunks_added"] == report["chunks_removed"] == 0 and len(report["unchanged_sources"]) == 6
    assert encoded == [] and all_chunks(built) == after


def test_add_one_file_and_human_output(cli, built, docs):
    new = _write(docs.parent / "elsewhere" / "joint.txt", "Joint pain and spine posture.")
    code, out, err = cli("index", "add", built, new)
    assert code == 0, err
    assert "sources added" in out and "chunks added" in out
    assert ask(cli, built, "spine posture", "first_stage=bm25", "-k", "1")["sources"][0]["source"] == str(new)
    code, out, err = cli("index", "add", built, _write(docs / "blank.txt", "   "), _write(docs / "skin.txt", "Sun."))
    assert code == 0, err
    assert "skipped:" in out and "blank.txt" in out


UNREADABLE = {"latin1.txt": "Caf\xe9 au lait, cr\xe8me br\xfbl\xe9e.".encode("latin-1"), "broken.jsonl": "{not json\n",
              "blank.txt": "   "}


@pytest.mark.parametrize("name", UNREADABLE)
def test_add_of_only_unreadable_files_is_a_clear_error(cli, built, tmp_path, name):
    bad = _write(tmp_path / "more" / name, UNREADABLE[name])
    error_line(cli("index", "add", built, bad), str(bad), "no text to index")
    details = info(cli, built)
    assert details["version"] == "v000001" and details["sources"] == 5


def test_add_skips_an_unreadable_file_among_good_ones(cli, built, docs):
    before = all_chunks(built)
    _write(docs / "heart.txt", UNREADABLE["latin1.txt"])  # a changed file that cannot be read keeps its old chunks
    bad = _write(docs / "latin1.txt", UNREADABLE["latin1.txt"])
    good = _write(docs / "skin.txt", "Sun exposure causes a skin rash.")
    code, out, err = cli("--json", "index", "add", built, docs)
    assert code == 0, err
    report = json.loads(out)
    assert report["added_sources"] == [str(good)] and report["changed_sources"] == [] and report["chunks_removed"] == 0
    assert any(str(bad) in w for w in report["warnings"]) and any(str(docs / "heart.txt") in w for w in report["warnings"])
    assert info(cli, built)["sources"] == 6
    after = all_chunks(built)
    assert {i: after[i] for i in before} == before and str(bad) not in {s for s, _ in after.values()}
    with sqlite3.connect(built / "v000002" / "state.sqlite") as db:
        assert str(bad) not in {s for (s,) in db.execute("SELECT source FROM sources")}


@pytest.mark.parametrize("case", ["missing_path", "not_an_index", "no_index_there", "unsupported_file"])
def test_add_bad_input_is_one_line_error(cli, built, docs, tmp_path, case):
    target, args, needles = built, [docs / "nope.txt"], ["nope.txt", "no such file"]
    if case == "not_an_index":
        target, args, needles = tmp_path / "empty", [docs], ["not a ragtune index"]
        target.mkdir()
    elif case == "no_index_there":
        target, args, needles = tmp_path / "typo", [docs], ["not a ragtune index"]
    elif case == "unsupported_file":
        args, needles = [_write(docs / "x.csv", "a,b")], ["unsupported file type"]
    error_line(cli("index", "add", target, *args), *needles)
    assert info(cli, built)["version"] == "v000001"
    assert not (tmp_path / "typo").exists() and not list((tmp_path / "empty").glob("*"))
    error_line(cli("index", "delete", tmp_path / "typo", "--source", "x"), "not a ragtune index")
    assert not (tmp_path / "typo").exists()  # a failed command leaves nothing behind


# ---------------------------------------------------------------------------------------------------- delete
def test_delete_by_source_and_by_id(cli, built, docs):
    from ragtune.index import Index

    before = all_chunks(built)
    lung = str(docs / "lung.md")
    code, out, err = cli("--json", "index", "delete", built, "--source", lung)
    assert code == 0, err
    report = json.loads(out)
    lung_ids = {i for i, (s, _) in before.items() if s == lung}
    assert report["removed_sources"] == [lung] and report["chunks_removed"] == len(lung_ids) > 0
    after = all_chunks(built)
    assert set(after) == set(before) - lung_ids
    assert info(cli, built)["sources"] == 4
    assert all(s["source"] != lung for s in ask(cli, built, "asthma attack chronic cough", "-k", "10")["sources"])

    victim = next(i for i, (s, _) in after.items() if s.endswith("heart.txt"))
    code, out, err = cli("--json", "index", "delete", built, "--id", victim)
    assert code == 0, err
    assert json.loads(out)["chunks_removed"] == 1
    assert set(all_chunks(built)) == set(after) - {victim}
    index = Index(built)
    assert index.faiss().ntotal == index.size == len(after) - 1
    for chunk_id, (_, text) in all_chunks(built).items():  # rows and vectors still line up
        assert index.search(text, 1, "dense")[0][0] == chunk_id
    index.close()
    # a deleted source can be added back
    assert cli("index", "add", built, docs)[0] == 0
    assert {s for s, _ in all_chunks(built).values()} >= {lung}


@pytest.mark.parametrize("case", ["unknown_source", "unknown_id", "nothing_named", "everything"])
def test_delete_errors_are_one_line(cli, built, docs, case):
    version = info(cli, built)["version"]
    if case == "unknown_source":
        result, needles = cli("index", "delete", built, "--source", "docs/nope.txt"), ["nope.txt", "index info"]
    elif case == "unknown_id":
        result, needles = cli("index", "delete", built, "--id", "0123456789abcdef0123"), ["0123456789abcdef0123"]
    elif case == "nothing_named":
        result, needles = cli("index", "delete", built), ["--source", "--id"]
    else:
        sources = [a for s in sorted({s for s, _ in all_chunks(built).values()}) for a in ("--source", s)]
        result, needles = cli("index", "delete", built, *sources), ["empty"]
    error_line(result, *needles)
    assert info(cli, built)["version"] == version
    assert not list(built.glob(".staging-*"))


# ------------------------------------------------------------------------------------------- safety checks
def test_a_different_embedder_is_refused(cli, built, docs, tiny_embedder, tmp_path):
    from ragtune.index import Index

    other = perturbed_copy(tiny_embedder, tmp_path / "other-embedder")
    _write(docs / "new.txt", "Bone density and joint pain.")
    line = error_line(cli("index", "add", built, docs, "--embedder", other), other, tiny_embedder)
    assert "different" in line
    with pytest.raises(ModelError, match="different"):
        Index(built, embedder=other)
    assert info(cli, built)["version"] == "v000001"
    same = shutil.copytree(tiny_embedder, tmp_path / "same-weights-elsewhere")  # a copy is the same model
    Index(built, embedder=str(same)).close()
    code, _, err = cli("index", "add", built, docs, "--embedder", same)
    assert code == 0, err


def test_an_embedder_retrained_in_place_is_refused(cli, docs, tiny_embedder, tmp_path):
    # The manifest points at the embedder's folder; new weights written there (train embed --overwrite into the
    # same run directory, say) must not be mixed with the stored vectors, with or without --embedder.
    embedder = shutil.copytree(tiny_embedder, tmp_path / "run" / "final")
    original = shutil.copytree(tiny_embedder, tmp_path / "original-copy")
    index = tmp_path / "index"
    build(cli, docs, index, str(embedder))
    assert ask(cli, index, "heart rhythm", "first_stage=dense")["sources"]
    perturbed_copy(tiny_embedder, tmp_path / "retrained")
    shutil.copy(tmp_path / "retrained" / "model.safetensors", embedder / "model.safetensors")
    error_line(cli("query", index, "heart rhythm", "--no-generate", "first_stage=dense"), str(embedder), "changed",
               "index build")
    error_line(cli("index", "add", index, _write(docs / "new.txt", "Bone density.")), "changed")
    assert ask(cli, index, "heart rhythm", "first_stage=bm25")["sources"]  # BM25 needs no embedder
    assert info(cli, index)["version"] == "v000001"
    code, _, err = cli("index", "add", index, docs, "--embedder", original)  # a copy of the original weights serves
    assert code == 0, err
    assert info(cli, index)["version"] == "v000002"


def test_an_index_built_from_a_hub_id_refuses_another_hub_model(cli, docs, tiny_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    hub_snapshot(monkeypatch, tmp_path, "org/embedder-a", tiny_embedder)
    hub_snapshot(monkeypatch, tmp_path, "org/embedder-b", perturbed_copy(tiny_embedder, tmp_path / "b"))
    index = tmp_path / "index"
    build(cli, docs, index, "org/embedder-a")
    assert json.loads((index / "v000001" / "manifest.json").read_text())["embedder"]["fingerprint"]
    error_line(cli("index", "add", index, _write(docs / "new.txt", "Bone density."), "--embedder", "org/embedder-b"),
               "org/embedder-b", "different model")
    assert ask(cli, index, "heart rhythm", "first_stage=dense")["sources"]
    assert list((tmp_path / "cache").rglob("*.npy"))  # a hub model's document vectors are cached too


def test_a_file_is_known_by_any_spelling_of_its_path(cli, built, docs, monkeypatch):
    before = all_chunks(built)
    monkeypatch.chdir(docs.parent)
    code, out, err = cli("--json", "index", "add", built, "docs/heart.txt", "./docs/lung.md")  # built from absolute
    assert code == 0, err
    report = json.loads(out)
    assert report["unchanged_sources"] == [str(docs / "heart.txt"), str(docs / "lung.md")]
    assert not report["added_sources"] and all_chunks(built) == before
    code, out, err = cli("--json", "index", "delete", built, "--source", "docs/heart.txt")
    assert code == 0, err
    assert json.loads(out)["removed_sources"] == [str(docs / "heart.txt")]
    assert {s for s, _ in all_chunks(built).values()} == {s for s, _ in before.values()} - {str(docs / "heart.txt")}


@pytest.mark.parametrize("command", ["index build", "data chunk"])
def test_chunks_are_capped_at_what_the_embedder_reads(cli, docs, tiny_embedder, tmp_path, command):
    from transformers import AutoTokenizer

    from ragtune.index import Index

    tokenizer = AutoTokenizer.from_pretrained(tiny_embedder)
    _write(docs / "long.txt", " ".join(f"heart rhythm word{i}" for i in range(300)))  # no boundary to split at
    out = tmp_path / "out"
    args = ["index", "build", docs, "--out", out] if command == "index build" else \
        ["data", "chunk", docs, "--out", out]
    code, _, err = cli(*args, "--embedder", tiny_embedder, "--chunk-size", "200", "--overlap", "8")
    assert code == 0, err
    assert "--chunk-size 200 is more than the embedder reads (62 tokens" in err  # max_seq_length 64 less CLS/SEP
    if command == "index build":
        index = Index(out)
        assert index.manifest["chunker"]["chunk_size"] == 62
        texts = list(index.texts().values())
        index.close()
    else:
        texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert max(lengths) == 64 and len(lengths) > 10  # every token of every chunk fits the encoder
    code, _, err = cli(*args, "--embedder", tiny_embedder, "--overwrite" if command == "index build" else "-q")
    assert code == 0 and "capped" not in err, err  # no size given: what the embedder reads, without a warning
    if command == "index build":
        index = Index(out)
        assert index.manifest["chunker"]["chunk_size"] == 62
        index.close()


def test_index_metadata_and_text_field(cli, tiny_embedder, tmp_path):
    folder = tmp_path / "docs"
    _write(folder / "a.jsonl", json.dumps({"body": "Statins lower cholesterol.", "topic": "heart"}) + "\n")
    index = tmp_path / "index"
    build(cli, folder, index, tiny_embedder, "--text-field", "body", "--meta", "team=cardio")
    _write(folder / "b.jsonl", json.dumps({"body": "Asthma narrows the airways."}) + "\n")
    code, _, err = cli("index", "add", index, folder / "b.jsonl", "--meta", "team=lungs", "--meta", "year=2024")
    assert code == 0, err  # the build's text field serves the add
    found = {s["text"]: s["metadata"] for s in ask(cli, index, "cholesterol asthma", "first_stage=bm25", "-k", "2")["sources"]}
    assert found == {"Statins lower cholesterol.": {"team": "cardio", "topic": "heart", "record": 1},
                     "Asthma narrows the airways.": {"team": "lungs", "year": 2024, "record": 1}}


def test_a_file_indexed_by_a_relative_path_is_known_from_any_working_directory(cli, docs, tiny_embedder, tmp_path,
                                                                               monkeypatch):
    monkeypatch.chdir(docs.parent)
    index = tmp_path / "index"
    build(cli, "docs", index, tiny_embedder)  # known as docs/heart.txt, ...
    monkeypatch.chdir(docs)  # a cron job elsewhere
    _write(docs / "heart.txt", HEART + "\nStatins lower cholesterol.\n")
    code, out, err = cli("--json", "index", "add", index, "heart.txt", "lung.md")
    assert code == 0, err
    report = json.loads(out)
    assert report["changed_sources"] == ["docs/heart.txt"] and report["unchanged_sources"] == ["docs/lung.md"]
    assert not report["added_sources"]
    assert {s for s, _ in all_chunks(index).values()} == {f"docs/{p.name}" for p in docs.iterdir()}
    assert any("Statins" in t for s, t in all_chunks(index).values() if s == "docs/heart.txt")
    code, out, err = cli("--json", "index", "delete", index, "--source", "./lung.md")
    assert code == 0, err
    assert json.loads(out)["removed_sources"] == ["docs/lung.md"]
    assert "docs/lung.md" not in {s for s, _ in all_chunks(index).values()}


def test_an_index_written_before_source_paths_were_stored_still_updates(cli, built, docs):
    from ragtune.index.store import current_version as _current

    with sqlite3.connect(_current(built) / "state.sqlite") as db:  # the first layout of sources: no path column
        db.execute("ALTER TABLE sources DROP COLUMN path")
    _write(docs / "heart.txt", HEART + "\nStatins lower cholesterol.\n")
    code, out, err = cli("--json", "index", "add", built, docs)
    assert code == 0, err
    assert json.loads(out)["changed_sources"] == [str(docs / "heart.txt")]
    assert ask(cli, built, "statins cholesterol", "first_stage=bm25")["sources"][0]["source"] == str(docs / "heart.txt")


@pytest.mark.parametrize("command", ["info", "query", "add"])
def test_a_newer_format_version_is_a_clear_error(cli, built, docs, command):
    manifest = built / "v000001" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format_version": 99}))
    args = {"info": ["index", "info", built], "query": ["query", built, "heart", "--no-generate"],
            "add": ["index", "add", built, docs]}[command]
    error_line(cli(*args), "format version 99", "upgrade ragtune")


MALFORMED = {  # manifest -> manifest, and what the error says
    "a_list": (lambda m: [1, 2], ["should be a JSON object"]),
    "no_embedder": (lambda m: {k: v for k, v in m.items() if k != "embedder"}, ["field 'embedder'", "missing"]),
    "no_chunk_size": (lambda m: {**m, "chunker": {"overlap": 4}}, ["field 'chunker.chunk_size'", "missing"]),
    "dimension_big": (lambda m: {**m, "embedder": {**m["embedder"], "dimension": "big"}},
                      ["field 'embedder.dimension'", "should be an integer", '"big"']),
    "version_one": (lambda m: {**m, "format_version": "one"}, ["field 'format_version'", "should be an integer", '"one"']),
    "retrieval_list": (lambda m: {**m, "retrieval": []}, ["field 'retrieval'", "should be a JSON object"]),
    "retrieval_bad": (lambda m: {**m, "retrieval": {"bm25": {"k1": -1}}}, ["field 'retrieval'", "bm25.k1"]),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_manifest_is_a_clear_error(cli, built, docs, case):
    manifest = built / "v000001" / "manifest.json"
    change, needles = MALFORMED[case]
    manifest.write_text(json.dumps(change(json.loads(manifest.read_text()))))
    written = manifest.read_text()
    for args in (["index", "info", built], ["query", built, "heart", "--no-generate"], ["index", "add", built, docs]):
        line = error_line(cli(*args), manifest, *needles, "index build --overwrite")
        assert "newer" not in line
    assert manifest.read_text() == written and (built / "CURRENT").read_text() == "v000001"


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not what ragtune wrote\xff" * 40)


DAMAGE = {  # what to damage, how, and the file the error names
    "sqlite_garbage": ("s000001/chunks.sqlite", garbage, "s000001/chunks.sqlite"),
    "sqlite_missing": ("s000001/chunks.sqlite", Path.unlink, "s000001/chunks.sqlite"),
    "state_garbage": ("state.sqlite", garbage, "state.sqlite"),
    "faiss_garbage": ("s000001/faiss.index", garbage, "s000001/faiss.index"),
    "faiss_missing": ("s000001/faiss.index", Path.unlink, "s000001/faiss.index"),
    "bm25_missing": ("s000001/bm25", shutil.rmtree, "s000001/bm25"),
    "bm25_meta_garbage": ("s000001/bm25/ragtune_bm25.json", garbage, "s000001/bm25"),
    "bm25_arrays_missing": ("s000001/bm25", lambda p: [f.unlink() for f in p.iterdir()
                                                       if f.name != "ragtune_bm25.json"], "s000001/bm25"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_index_file_is_a_clear_error(cli, built, case):
    target, damage, named = DAMAGE[case]
    damage(built / "v000001" / target)
    for args in (["index", "info", built], ["query", built, "heart", "--no-generate"]):
        error_line(cli(*args), built / "v000001" / named, "index build --overwrite")


def test_a_faiss_index_of_another_dimension_is_a_clear_error(cli, built):
    manifest = built / "v000001" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "embedder": {**data["embedder"], "dimension": 7}}))
    error_line(cli("query", built, "heart", "--no-generate"), "faiss.index", "32-dimensional", "says 7")


def test_a_damaged_index_is_a_clear_error(cli, built, docs):
    (built / "CURRENT").write_text("")
    error_line(cli("index", "add", built, docs), "manifest.json", "rebuild")
    assert (built / "v000001" / "s000001" / "chunks.sqlite").is_file()  # a broken pointer never costs the data
    (built / "CURRENT").write_text("v000001")
    (built / "v000001" / "manifest.json").write_text("{not json")
    error_line(cli("index", "info", built), "manifest.json", "rebuild")
    (built / "CURRENT").unlink()
    error_line(cli("index", "info", built), "not a ragtune index")


def test_build_over_an_existing_index_needs_overwrite(cli, built, docs, tiny_embedder, tmp_path, monkeypatch):
    from ragtune.index import update as index_module

    before = ask(cli, built, "calcium intake", "-k", "3")
    error_line(cli("index", "build", docs, "--out", built, "--embedder", tiny_embedder), "--overwrite")
    assert ask(cli, built, "calcium intake", "-k", "3")["sources"] == before["sources"]
    # a rebuild that fails half way leaves the old index answering
    other = make_docs(tmp_path / "other")
    (other / "heart.txt").unlink()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):  # undoes only this patch
        patch.setattr(index_module, "_write_version", fail)
        cli("index", "build", other, "--out", built, "--embedder", tiny_embedder, "--overwrite")
    assert ask(cli, built, "calcium intake", "-k", "3")["sources"] == before["sources"]
    assert not list(built.glob(".staging-*"))
    # --overwrite rebuilds from the new documents only
    build(cli, other, built, tiny_embedder, "--overwrite")
    assert {s for s, _ in all_chunks(built).values()} == {str(p) for p in other.iterdir()}
    assert (built / (built / "CURRENT").read_text()).is_dir()


def test_build_refuses_a_file_as_its_output(cli, docs, tiny_embedder, tmp_path):
    out = _write(tmp_path / "f.txt", "x")
    error_line(cli("index", "build", docs, "--out", out, "--embedder", tiny_embedder), out, "is a file", "folder")
    error_line(cli("index", "build", docs, "--out", out / "idx", "--embedder", tiny_embedder), f"{out} is a file")
    assert out.read_text() == "x"


def test_build_refuses_a_folder_that_is_not_an_index(cli, docs, tiny_embedder, tmp_path):
    out = tmp_path / "busy"
    _write(out / "precious.txt", "keep me")
    error_line(cli("index", "build", docs, "--out", out, "--embedder", tiny_embedder), "not a ragtune index")
    assert (out / "precious.txt").read_text() == "keep me"
    empty = tmp_path / "docs-empty"
    _write(empty / "blank.txt", "")
    error_line(cli("index", "build", empty, "--out", tmp_path / "i2", "--embedder", tiny_embedder), "no text")


def test_build_over_what_a_crashed_first_build_left(cli, docs, tiny_embedder, tmp_path):
    out = tmp_path / "index"
    _write(out / ".lock", "")
    _write(out / ".staging-4242" / "chunks.sqlite", "half")
    _write(out / "v000001" / "faiss.index", "never made live")
    build(cli, docs, out, tiny_embedder)
    assert (out / "CURRENT").read_text() == "v000001" and info(cli, out)["sources"] == 5
    assert sorted(p.name for p in out.iterdir()) == [".lock", "CURRENT", "v000001"]


def test_a_failed_change_leaves_the_index_as_it_was(built, docs, monkeypatch):
    from ragtune.index import update as index_module
    from ragtune.retrieval.bm25 import BM25Retriever

    before = all_chunks(built)
    _write(docs / "new.txt", "Sun exposure and skin cancer.")

    def fail(self, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(BM25Retriever, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        index_module.add_to_index(built, [str(docs)])
    assert all_chunks(built) == before and (built / "CURRENT").read_text() == "v000001"
    assert not list(built.glob(".staging-*")) and not (built / "v000002").exists()


# -------------------------------------------------------------------------------------------- crash safety
KILL = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from ragtune.index import update as index
    from ragtune.retrieval.bm25 import BM25Retriever

    where = sys.argv[1]
    if where == "mid_write":  # sqlite and faiss written, bm25 half, no manifest
        def save(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "vocab.index.json").write_text("{")
            os.kill(os.getpid(), signal.SIGKILL)
        BM25Retriever.save = save
    elif where == "staged":  # every file written, not yet live
        original = index._write_version
        def write(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        index._write_version = write
    elif where == "renamed":  # the version folder is in place, CURRENT not yet switched
        replace = os.replace
        def switch(src, dst):
            if Path(dst).name == "CURRENT":
                os.kill(os.getpid(), signal.SIGKILL)
            replace(src, dst)
        os.replace = switch  # the one os module, which the writer lock uses
    if sys.argv[2] == "index":
        from ragtune.cli.main import run
        sys.exit(run(sys.argv[2:]))
    index.delete_from_index(sys.argv[3], [sys.argv[4]])
""")


@pytest.mark.parametrize("where,command", [("mid_write", "add"), ("staged", "delete"), ("renamed", "delete")])
def test_a_killed_writer_leaves_the_index_answering_as_before(cli, built, docs, tmp_path, where, command):
    from ragtune.index import Index

    questions = ["calcium intake", "asthma attack", "stroke recovery"]
    before = {q: ask(cli, built, q, "-k", "4")["sources"] for q in questions}
    chunks_before = all_chunks(built)
    _write(docs / "new.txt", "Sun exposure and skin cancer need wound healing.")
    args = ["index", "add", str(built), str(docs)] if command == "add" else ["delete", str(built),
                                                                              str(docs / "gut.jsonl")]
    proc = subprocess.run([sys.executable, "-c", KILL, where, *args], capture_output=True, text=True, cwd=tmp_path,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (built / "CURRENT").read_text() == "v000001"
    assert list(built.glob(".staging-*")) or where == "renamed"  # the killed writer's leftovers
    index = Index(built)
    assert index.info()["version"] == "v000001" and index.size == len(chunks_before)
    index.close()
    assert {q: ask(cli, built, q, "-k", "4")["sources"] for q in questions} == before

    code, out, err = cli("--json", "index", "add", built, docs)  # the next writer cleans up and succeeds
    assert code == 0, err
    assert json.loads(out)["added_sources"] == [str(docs / "new.txt")]
    live = (built / "CURRENT").read_text()
    assert not list(built.glob(".staging-*"))
    assert sorted(p.name for p in built.glob("v0*")) == ["v000001", live]  # the replaced version stays for readers
    index = Index(built)
    assert index.search("skin cancer wound healing", 1, "bm25")[0][0] in {
        i for i, (s, _) in all_chunks(built).items() if s.endswith("new.txt")}
    index.close()


WRITE_SLOWLY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ragtune.index import update as index

    original = index._write_version
    def write(staging, *args, **kwargs):
        Path(sys.argv[1]).write_text("writing")  # the writer holds the lock now
        time.sleep(2)
        original(staging, *args, **kwargs)
        time.sleep(0.5)
    index._write_version = write
    print(index.add_to_index(sys.argv[2], sys.argv[3:]).chunks_added)
""")


def test_readers_open_and_query_while_a_writer_works(cli, built, docs, tmp_path):
    from ragtune.index import Index, delete_from_index

    sizes = {"v000001": len(all_chunks(built))}
    _write(docs / "new.txt", "Sun exposure and skin cancer need wound healing.")
    marker = tmp_path / "writing"
    writer = subprocess.Popen([sys.executable, "-c", WRITE_SLOWLY, str(marker), str(built), str(docs)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen: list[tuple[str, int, int]] = []
    problems: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                index = Index(built)
                hits = index.search("stroke recovery", 3, "bm25")
                ids = set(index.texts())
                assert hits and all(d in ids for d, _ in hits)
                seen.append((index.folder.name, index.size, index.faiss().ntotal))
                index.close()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                problems.append(exc)
            time.sleep(0.05)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.time() + 120
        while not marker.exists() and writer.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), writer.communicate()[1][-2000:]
        opened_during_write = len(seen)
        # a second writer waits for the lock and then applies its change on top of the first one's
        delete_from_index(built, [str(docs / "gut.jsonl")])
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and int(out) > 0, err[-2000:]
        time.sleep(0.3)
    finally:
        done.set()
        reader.join()
        if writer.poll() is None:
            writer.kill()
    assert not problems, problems[:3]
    assert len(seen) > opened_during_write > 0
    final = all_chunks(built)
    assert any(s.endswith("new.txt") for s, _ in final.values())  # the first writer's change survived
    assert not any(s.endswith("gut.jsonl") for s, _ in final.values())
    assert (built / "CURRENT").read_text() == "v000003"
    sizes["v000003"] = len(final)
    for version, size, ntotal in seen:  # every reader saw one whole version
        assert size == ntotal
        assert version in ("v000001", "v000002", "v000003")
        if version in sizes:
            assert size == sizes[version]
