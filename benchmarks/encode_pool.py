"""Encoding a corpus with sentence-transformers' multi-process pool against one process, side by side: the pool is
how a large corpus is encoded across the GPUs of one node (`target_devices=["cuda:0", "cuda:1", ...]`), and on a
CPU it shows the pool's own overhead (process start-up, pickling the texts and the vectors back).

all-MiniLM-L6-v2 on SciFact abstracts (../shared/data/scifact, CC BY-NC; read, never copied), fp32, batch 32.
One process uses every core; the pool runs one process per core with one thread each. Vectors are compared too.
Run: python -m benchmarks.encode_pool [--texts 1000] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.common import write_result
from benchmarks.rag_index import SCIFACT

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def texts(n: int) -> list[str]:
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
    return [f"{r['title']} {r['text']}" for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from ragtune.models.resolve import resolve_model

    corpus = texts(args.texts)
    model = SentenceTransformer(str(resolve_model(MODEL)), device="cpu")
    model.encode(corpus[:64], batch_size=32)  # warm-up
    start = time.perf_counter()
    single = model.encode(corpus, batch_size=32, normalize_embeddings=True)
    one_s = time.perf_counter() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers inherit one thread each: processes x 1 thread = the cores
    start = time.perf_counter()
    pool = model.start_multi_process_pool(["cpu"] * args.processes)
    started_s = time.perf_counter() - start
    try:
        pooled = model.encode(corpus, batch_size=32, normalize_embeddings=True, pool=pool)
    finally:
        model.stop_multi_process_pool(pool)
    pool_s = time.perf_counter() - start
    torch.set_num_threads(threads)
    cosine = float(np.min(np.sum(single * pooled, axis=1)))
    rows = {"one process": {"seconds": round(one_s, 2), "texts_per_s": round(len(corpus) / one_s, 1),
                            "threads": threads},
            f"pool of {args.processes}": {"seconds": round(pool_s, 2), "texts_per_s": round(len(corpus) / pool_s, 1),
                                          "pool_start_s": round(started_s, 2), "threads_each": 1}}
    for name, row in rows.items():
        print(f"{name:<14}{row['seconds']:>8.2f} s{row['texts_per_s']:>9.1f} texts/s")
    ratio = one_s / pool_s
    print(f"pool / one process: {ratio:.2f}x throughput (pool start-up {started_s:.1f} s included); "
          f"lowest cosine between their vectors: {cosine:.6f}")
    write_result("encode_pool", {"model": MODEL, "texts": len(corpus), "processes": args.processes, "rows": rows,
                                 "pool_over_one": round(ratio, 3), "min_cosine": round(cosine, 6)})


if __name__ == "__main__":
    main()
