"""Index segments (`ragtune.index.segments`): `add` writes one new segment and links the others, `delete` only
marks chunks, search never returns a deleted chunk, BM25 keeps the whole index's term statistics across segments,
`compact` gives what a fresh build over the same files gives, and a format-1 index still reads and updates."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.unit.test_bad_input import _write
from tests.unit.test_index import HEART, all_chunks, ask, build, info, make_docs


@pytest.fixture
def docs(tmp_path) -> Path:
    return make_docs(tmp_path / "docs")


@pytest.fixture
def built(cli, docs, tmp_path, tiny_embedder) -> Path:
    build(cli, docs, tmp_path / "index", tiny_embedder)
    return tmp_path / "index"


def _version(index: Path) -> Path:
    return index / (index / "CURRENT").read_text().strip()


def test_add_writes_one_segment_and_links_the_others(cli, built, docs, monkeypatch):
    from ragtune.retrieval import dense

    encoded: list[str] = []
    original = dense.DenseRetriever.encode_documents
    monkeypatch.setattr(dense.DenseRetriever, "encode_documents",
                        lambda self, texts, show_progress=False: encoded.extend(texts) or original(self, texts))
    first = _version(built)
    new = _write(docs.parent / "more" / "eye.txt", "Glaucoma raises eye pressure.")
    code, out, err = cli("--json", "index", "add", built, new)
    assert code == 0, err
    second = _version(built)
    assert json.loads((second / "manifest.json").read_text())["segments"] == ["s000001", "s000002"]
    for name in ("chunks.sqlite", "faiss.index", "bm25/ragtune_bm25.json"):  # the old segment is linked, not copied
        assert os.stat(first / "s000001" / name).st_ino == os.stat(second / "s000001" / name).st_ino
    assert encoded == ["Glaucoma raises eye pressure."]  # only the new chunk was encoded
    details = info(cli, built)
    assert details["segments"] == 2 and details["deleted"] == 0 and details["sources"] == 6
    for mode in ("bm25", "dense", "hybrid"):
        top = ask(cli, built, "Glaucoma raises eye pressure.", f"first_stage={mode}", "-k", "1")["sources"][0]
        assert top["source"] == str(new), mode


def test_delete_marks_chunks_and_no_search_returns_them(cli, built, docs):
    from ragtune.index import Index

    heart = str(docs / "heart.txt")
    gone = {i for i, (s, _) in all_chunks(built).items() if s == heart}
    code, out, err = cli("--json", "index", "delete", built, "--source", heart)
    assert code == 0, err
    assert json.loads(out)["chunks_removed"] == len(gone)
    version = _version(built)
    assert json.loads((version / "manifest.json").read_text())["segments"] == ["s000001"]  # no segment written
    with sqlite3.connect(version / "state.sqlite") as db:
        assert {i for _, i in db.execute("SELECT segment, id FROM deleted")} == gone
    index = Index(built)
    assert index.size == len(all_chunks(built)) and not gone & set(index.ids())
    for mode in ("bm25", "dense", "hybrid"):
        hits = index.search("Cardiac arrest stops the heart. Blood pressure", 50, mode)
        assert (hits or mode == "bm25") and not gone & {d for d, _ in hits}, mode  # BM25: no other chunk matches
    assert not gone & index.matching({"source": heart}) and index.matching({"source": heart}) == frozenset()
    assert index.chunks(sorted(gone)) == [] and index.info()["deleted"] == len(gone)
    index.close()


def test_a_changed_file_replaces_its_chunks_even_where_ids_repeat(cli, built, docs):
    """A changed file's unchanged chunks get the same ids as before: the new segment's copies are live, the old
    segment's are deleted."""
    heart = docs / "heart.txt"
    before = {i for i, (s, _) in all_chunks(built).items() if s == str(heart)}
    heart.write_text(HEART + "\nStatins lower cholesterol a great deal.\n", encoding="utf-8")
    code, out, err = cli("--json", "index", "add", built, docs)
    assert code == 0, err
    after = {i for i, (s, _) in all_chunks(built).items() if s == str(heart)}
    assert before & after  # some ids repeat across the two segments
    live = all_chunks(built)
    assert len([i for i, (s, _) in live.items() if s == str(heart)]) == len(after)
    top = ask(cli, built, "statins lower cholesterol", "first_stage=bm25", "-k", "1")["sources"][0]
    assert top["source"] == str(heart) and "Statins" in top["text"]


def test_bm25_scores_across_segments_use_the_whole_index_statistics(cli, built, docs, tmp_path, tiny_embedder):
    """A new chunk in a small new segment scores as it would in a fresh build: each term is rescored with the
    whole index's IDF and average length."""
    from ragtune.index import Index

    new = _write(docs / "joint.txt", "Joint pain and spine posture.")
    assert cli("index", "add", built, new)[0] == 0
    fresh = tmp_path / "fresh"
    build(cli, docs, fresh, tiny_embedder)
    segmented, rebuilt = Index(built), Index(fresh)
    for query in ("spine posture", "joint pain calcium", "asthma smoking"):
        a = dict(segmented.search(query, 20, "bm25"))
        b = dict(rebuilt.search(query, 20, "bm25"))
        assert max(a, key=a.get) == max(b, key=b.get), query
        for chunk_id in a.keys() & b.keys():
            assert a[chunk_id] == pytest.approx(b[chunk_id], rel=1e-4), (query, chunk_id)
    segmented.close()
    rebuilt.close()


@pytest.mark.parametrize("segments", [1, 2])
def test_deleted_chunks_leave_bm25s_statistics_at_once(cli, built, docs, tmp_path, tiny_embedder, segments):
    """After a delete (no compaction), every chunk scores as in a fresh build of the files that are left: the
    deleted chunks no longer count in the document frequencies, the chunk count or the average length."""
    from ragtune.index import Index

    if segments == 2:
        assert cli("index", "add", built, _write(docs / "joint.txt", "Joint pain and spine posture in smokers."))[0] == 0
    assert cli("index", "delete", built, "--source", str(docs / "lung.md"))[0] == 0
    (docs / "lung.md").unlink()
    fresh = tmp_path / "fresh"
    build(cli, docs, fresh, tiny_embedder)
    left, rebuilt = Index(built), Index(fresh)
    assert left.deleted > 0 and len(left.segments) == segments
    for query in ("smoking damage", "heart rhythm age", "joint pain calcium", "bone density spine"):
        a, b = dict(left.search(query, 30, "bm25")), dict(rebuilt.search(query, 30, "bm25"))
        assert a.keys() == b.keys(), query
        for chunk_id in a:
            assert a[chunk_id] == pytest.approx(b[chunk_id], rel=1e-4), (query, chunk_id)
        ids = sorted(a)
        assert left.bm25().scores_for(query, ids) == pytest.approx(rebuilt.bm25().scores_for(query, ids), rel=1e-4)
    left.close()
    rebuilt.close()


def test_compact_gives_one_segment_with_what_a_fresh_build_holds(cli, built, docs, tmp_path, tiny_embedder):
    from ragtune.index import Index

    _write(docs / "eye.txt", "Glaucoma raises eye pressure.")
    assert cli("index", "add", built, docs)[0] == 0
    assert cli("index", "delete", built, "--source", str(docs / "lung.md"))[0] == 0
    (docs / "lung.md").unlink()
    live = all_chunks(built)
    code, out, err = cli("--json", "index", "compact", built)
    assert code == 0, err
    assert json.loads(out)["chunks_removed"] > 0
    details = info(cli, built)
    assert details["segments"] == 1 and details["deleted"] == 0 and details["chunks"] == len(live)
    assert all_chunks(built) == live
    fresh = tmp_path / "fresh"
    build(cli, docs, fresh, tiny_embedder)
    compacted, rebuilt = Index(built), Index(fresh)
    assert sorted(compacted.ids()) == sorted(rebuilt.ids())
    for query in ("glaucoma eye", "calcium intake", "stomach ulcer"):
        for mode in ("bm25", "dense"):
            a, b = compacted.search(query, 5, mode), rebuilt.search(query, 5, mode)
            assert [d for d, _ in a] == [d for d, _ in b], (query, mode)
            assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5), (query, mode)
    compacted.close()
    rebuilt.close()


def test_adds_past_the_segment_cap_fold_the_smallest_and_never_rewrite_the_big_one(cli, built, docs, monkeypatch):
    from ragtune.index import Index, update

    monkeypatch.setattr(update, "MAX_SEGMENTS", 3)
    big = _version(built) / "s000001" / "chunks.sqlite"
    inode = os.stat(big).st_ino
    expected = dict(all_chunks(built))
    for n, (name, text) in enumerate([("eye", "Glaucoma raises eye pressure."), ("ear", "Tinnitus rings in ears."),
                                      ("skin", "A rash spreads on the skin."), ("tooth", "Tooth decay needs a filling."),
                                      ("nose", "A blocked nose after a cold.")]):
        code, out, err = cli("--json", "index", "add", built, _write(docs.parent / "more" / f"{name}.txt", text))
        assert code == 0, err
        assert json.loads(out)["segments_merged"] == (1 if n >= 2 else 0), n  # the 4th segment folds the smallest
        details = info(cli, built)
        assert details["segments"] == min(n + 2, 3) and details["deleted"] == 0
        assert os.stat(_version(built) / "s000001" / "chunks.sqlite").st_ino == inode  # the big one is only linked
        expected.update({i: v for i, v in all_chunks(built).items() if v[0].endswith(f"{name}.txt")})
        assert all_chunks(built) == expected
        index = Index(built)
        for mode in ("bm25", "dense", "hybrid"):  # every chunk is still found, once, by every first stage
            hits = index.search(text, index.size, mode)
            assert len({d for d, _ in hits}) == len(hits) and {d for d, _ in hits} <= set(expected), mode
        assert index.search(text, 1, "bm25")[0][0] in {i for i, v in expected.items() if v[1] == text}
        index.close()
    # a delete that leaves a segment with nothing live drops it, at no cost
    newest = json.loads((_version(built) / "manifest.json").read_text())["segments"][-1]
    with sqlite3.connect(_version(built) / newest / "chunks.sqlite") as db:
        sources = sorted({s for (s,) in db.execute("SELECT source FROM chunks")})
    code, out, err = cli("--json", "index", "delete", built, *[a for s in sources for a in ("--source", s)])
    assert code == 0, err
    assert json.loads(out)["segments_merged"] == 1
    assert newest not in json.loads((_version(built) / "manifest.json").read_text())["segments"]
    assert info(cli, built)["deleted"] == 0


def _as_format_1(index: Path) -> None:
    """Rewrite a one-segment index in the layout ragtune wrote before segments: the segment's files in the version
    folder, the sources in its chunks.sqlite, no `segments` in the manifest."""
    version = _version(index)
    for item in (version / "s000001").iterdir():
        shutil.move(str(item), version / item.name)
    (version / "s000001").rmdir()
    with sqlite3.connect(version / "chunks.sqlite") as db:
        db.execute(f"ATTACH DATABASE '{version / 'state.sqlite'}' AS state")
        db.execute("CREATE TABLE sources AS SELECT * FROM state.sources")
        db.commit()
        db.execute("DETACH DATABASE state")
    (version / "state.sqlite").unlink()
    manifest = json.loads((version / "manifest.json").read_text())
    manifest = {k: v for k, v in manifest.items() if k not in ("segments", "deleted")}
    (version / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))


def test_a_format_1_index_reads_and_its_first_change_rewrites_it(cli, built, docs):
    live = all_chunks(built)
    _as_format_1(built)
    top = ask(cli, built, "calcium intake", "first_stage=bm25", "-k", "1")["sources"][0]
    assert "calcium" in top["text"].lower()
    assert info(cli, built)["format_version"] == 1 and info(cli, built)["chunks"] == len(live)
    code, out, err = cli("--json", "index", "delete", built, "--source", str(docs / "heart.txt"))
    assert code == 0, err
    details = info(cli, built)
    assert details["format_version"] == 2 and details["segments"] == 1 and details["deleted"] == 0
    assert all_chunks(built) == {i: v for i, v in live.items() if v[0] != str(docs / "heart.txt")}


def test_compact_bad_input_is_one_line(cli, tmp_path):
    from tests.unit.test_chunk import error_line

    error_line(cli("index", "compact", tmp_path / "nowhere"), "not a ragtune index")
    (tmp_path / "plain").mkdir()
    error_line(cli("index", "compact", tmp_path / "plain"), "not a ragtune index")
