"""Index updates that cost what changed, on a large index (issue 18 targets: adding 1,000 chunks costs < 1% of a
full build; deleting one source takes < 1 s; query p95 stays within 20% of a freshly compacted index; memory and
disk reported).

The large index is synthetic where it has to be: its N chunks (default 1,000,000, in 10,000 sources of 100) are
SciFact sentences with a serial number, and their vectors are random unit vectors, because encoding a million
chunks takes hours on 2 cores. Writing that segment (SQLite, FAISS, BM25) is measured; the encoding a real build
would add is extrapolated from the 1,000 real chunks that `add` encodes, and reported as such. Then, in order:
`ragtune index add` of 1,000 new chunks (encoded for real), `delete` of one source, hybrid query latency on the
segmented index, `compact`, and the same queries on the compacted index.
Reads ../shared/data/scifact (CC BY-NC; everything is written to a temporary folder and removed).
Run: python -m benchmarks.index_updates [--chunks 1000000] [--queries 100] [--faiss ivf|hnsw|flat]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT, scifact_questions

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
PER_SOURCE = 100


def sentences() -> list[str]:
    out = []
    for line in (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        out += [s for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.split()) >= 6]
    return out


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def synthetic_index(root: Path, n: int, pool: list[str], faiss_index: str = "flat") -> float:
    """A one-chunk real build, then a synthetic segment of n chunks linked in beside it; returns the seconds the
    synthetic segment took to write."""
    from ragtune.index import Index, build_index
    from ragtune.index.store import IndexedFile, link_folder, writer
    from ragtune.index.update import _write_segment, _write_version
    from ragtune.ingest.chunk import Chunk

    seed = root.parent / "seed" / "seed.txt"
    seed.parent.mkdir(parents=True)
    seed.write_text("A seed document so that the index has a real manifest.", encoding="utf-8")
    from ragtune.config.retrieval import DenseSection, RetrievalConfig

    config = RetrievalConfig(dense=DenseSection(cache=False, index=faiss_index,  # cache off: the add encodes too
                                                ivf_nlist=1000 if n >= 100_000 and faiss_index == "ivf" else None))
    build_index(root, [str(seed)], EMBEDDER, config)
    index = Index(root)
    dim = index.manifest["embedder"]["dimension"]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(f"syn{i:08d}", f"{pool[i % len(pool)]} (item {i})", f"synthetic/source{i // PER_SOURCE:06d}.txt",
                    "", i % PER_SOURCE, 0, 0) for i in range(n)]
    sources = {**index.sources(), **{f"synthetic/source{s:06d}.txt": IndexedFile(f"h{s}", PER_SOURCE,
                                                                                f"/synthetic/source{s:06d}.txt")
                                     for s in range(n // PER_SOURCE)}}
    with writer(root) as staging:
        link_folder(index.folder / "s000001", staging / "s000001")
        start = time.perf_counter()
        _write_segment(staging / "s000002", chunks, vectors, index.config)
        seconds = time.perf_counter() - start
        _write_version(staging, index.manifest, ["s000001", "s000002"], sources, set())
    index.close()
    return seconds


def latency(root: Path, questions: list[str], k: int = 10) -> dict:
    from ragtune.index import Index

    index = Index(root)
    index.search(questions[0], k)  # loads the embedder
    times = []
    for question in questions:
        start = time.perf_counter()
        index.search(question, k, "hybrid")
        times.append(1000 * (time.perf_counter() - start))
    info = index.info()
    index.close()
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "segments": info["segments"],
            "deleted": info["deleted"], "chunks": info["chunks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--add", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--faiss", choices=["flat", "ivf", "hnsw"], default="ivf", help="the dense index type")
    args = parser.parse_args()
    from ragtune.index import add_to_index, compact_index, delete_from_index

    pool, questions = sentences(), scifact_questions(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        write_s = synthetic_index(root, args.chunks, pool, args.faiss)
        disk_before = folder_bytes(root / (root / "CURRENT").read_text())
        new = Path(tmp) / "new" / "new.jsonl"
        new.parent.mkdir()
        new.write_text("".join(json.dumps({"text": f"{pool[-1 - i]} (new {i})"}) + "\n" for i in range(args.add)),
                       encoding="utf-8")
        added = add_to_index(root, [str(new)])
        encode_per_chunk = added.seconds / added.chunks_added  # an upper bound: the add's writes are in it too
        full_build_s = write_s + encode_per_chunk * args.chunks
        start = time.perf_counter()
        removed = delete_from_index(root, ["synthetic/source000123.txt"])
        delete_s = time.perf_counter() - start
        segmented = latency(root, questions)
        disk_segmented = folder_bytes(root / (root / "CURRENT").read_text())
        compacted_report = compact_index(root)
        compacted = latency(root, questions)
        disk_compacted = folder_bytes(root / (root / "CURRENT").read_text())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = {"write_synthetic_segment_s": round(write_s, 1), "add_s": round(added.seconds, 2),
            "full_build_s_estimated": round(full_build_s), "add_share_of_full_build": added.seconds / full_build_s,
            "delete_one_source_s": round(delete_s, 3), "delete_chunks": removed.chunks_removed,
            "compact_s": round(compacted_report.seconds, 1), "segmented": segmented, "compacted": compacted,
            "p95_segmented_over_compacted": segmented["p95_ms"] / compacted["p95_ms"],
            "disk_bytes": {"built": disk_before, "after_add_and_delete": disk_segmented, "compacted": disk_compacted},
            "peak_rss_gb": round(peak_gb, 2)}
    print(f"{args.chunks:,} chunks (synthetic vectors); writing them took {write_s:.0f} s; a full build with "
          f"encoding would take about {full_build_s / 3600:.1f} h here (encoding extrapolated from the add)")
    print(f"add {added.chunks_added} chunks: {added.seconds:.1f} s = {100 * rows['add_share_of_full_build']:.3f}% of a full "
          f"build (target < 1%)")
    print(f"delete one source ({removed.chunks_removed} chunks): {delete_s:.3f} s (target < 1 s)")
    print(f"hybrid p50/p95: segmented {segmented['p50_ms']}/{segmented['p95_ms']} ms ({segmented['segments']} "
          f"segments, {segmented['deleted']} deleted), compacted {compacted['p50_ms']}/{compacted['p95_ms']} ms: "
          f"{rows['p95_segmented_over_compacted']:.2f}x (target <= 1.2x); compaction {compacted_report.seconds:.0f} s")
    print(f"disk: {disk_before / 2**30:.2f} GB built, {disk_segmented / 2**30:.2f} GB after add + delete, "
          f"{disk_compacted / 2**30:.2f} GB compacted; peak memory {peak_gb:.1f} GB")
    write_result(f"index_updates_{args.faiss}", {"chunks": args.chunks, "faiss": args.faiss,
                                                 "added": added.chunks_added, "queries": len(questions), **rows})


if __name__ == "__main__":
    main()
