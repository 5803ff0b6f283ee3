"""CLaRa memory vectors stored in the index (`index build --clara RUN`) against compressing at query time (issue 20).

One run: a short stage-1 CLaRa run on the packaged SmolLM2-135M-Instruct (`--steps`, for the shapes and the
timings, not for answer quality), then two indexes of the first `--docs` PubMedQA passages with the same embedder,
one plain and one with `--clara RUN`, and the same `--questions` test questions answered through each with that run
as the generator (BM25's top 3, `--max-new-tokens`). Reported: each build's time (what compressing every chunk
costs once), the index size, and per query p50/p95 of the generator's time and of the whole answer, with how many
greedy answers came out the same both ways (the stored vectors are fp16 copies of the same compression).
Run alone: python -m benchmarks.clara_index [--steps 4] [--docs 1000] [--questions 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.clara_pubmedqa import PUBMEDQA, ragtune
from benchmarks.common import write_result


def answers(index: Path, run: Path, questions: list[str], max_new_tokens: int) -> dict:
    """Answer every question through `index` with the CLaRa `run`; per-query timings and the answers."""
    from ragtune.config.rag import RAGSection
    from ragtune.rag.pipeline import RAGPipeline

    settings = RAGSection(k=3, first_stage="bm25", max_new_tokens=max_new_tokens)
    pipeline = RAGPipeline.from_index(str(index), generator=str(run), settings=settings)
    pipeline.answer(questions[0])  # warm-up
    generate, total, texts = [], [], []
    for question in questions:
        start = time.perf_counter()
        answer = pipeline.answer(question)
        total.append(1000 * (time.perf_counter() - start))
        generate.append(answer.timings["generate_ms"])
        texts.append(answer.answer)
    stats = {name: {"p50_ms": round(float(np.percentile(v, 50)), 1), "p95_ms": round(float(np.percentile(v, 95)), 1)}
             for name, v in (("generate", generate), ("answer", total))}
    return {**stats, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="stage-1 optimizer steps (shapes and timings only)")
    parser.add_argument("--docs", type=int, default=1000, help="PubMedQA passages indexed")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, help="keep the run and indexes here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="clara-index-"))
    root.mkdir(parents=True, exist_ok=True)
    records, run, data = root / "compress.jsonl", root / "compress", Path(PUBMEDQA)
    if not (run / "final" / "clara.json").is_file():  # a run kept under --out is reused
        ragtune("data", "clara", data, "--stage", "compress", "-o", records, "--sentences", "1")
        ragtune("train", "clara", "-c", "configs/clara/smollm2-135m-compress.yaml", f"data.train={records}",
                f"output.dir={run}", f"train.max_steps={args.steps}", f"train.eval_steps={args.steps}",
                f"train.save_steps={args.steps}", "eval.generation_samples=2", "data.max_eval_samples=8",
                "--allow-regression", "--overwrite")
    corpus = root / "corpus.jsonl"
    lines = (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:args.docs]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results: dict = {"steps": args.steps, "docs": len(lines), "questions": args.questions,
                     "max_new_tokens": args.max_new_tokens}
    for name, extra in (("plain", []), ("clara", ["--clara", run])):
        start = time.perf_counter()
        ragtune("index", "build", corpus, "--out", root / name, *extra, "--overwrite")
        info = json.loads(ragtune("index", "info", root / name))
        results[name] = {"build_s": round(time.perf_counter() - start, 1), "chunks": info["chunks"],
                         "bytes": info["bytes"], **({"clara": info["clara"]} if "clara" in info else {})}
        print(name, results[name], flush=True)
    queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").read_text(encoding="utf-8")
               .splitlines() if line.strip()][:args.questions]
    texts = {}
    for name in ("plain", "clara"):
        found = answers(root / name, run, queries, args.max_new_tokens)
        texts[name] = found.pop("texts")
        results[name].update(found)
        print(f"{name}: generator p50 {found['generate']['p50_ms']} ms, p95 {found['generate']['p95_ms']} ms; "
              f"answer p50 {found['answer']['p50_ms']} ms, p95 {found['answer']['p95_ms']} ms", flush=True)
    results["same_answers"] = sum(a == b for a, b in zip(texts["plain"], texts["clara"]))
    results["generate_p50_speedup"] = round(results["plain"]["generate"]["p50_ms"] /
                                            results["clara"]["generate"]["p50_ms"], 2)
    print(f"stored memory vectors: generator {results['generate_p50_speedup']}x faster at p50; "
          f"{results['same_answers']} of {len(queries)} answers the same", flush=True)
    write_result("clara_index", results)


if __name__ == "__main__":
    main()
