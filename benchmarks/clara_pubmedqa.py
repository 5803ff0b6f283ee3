"""CLaRa on the packaged PubMedQA, stage by stage, against text RAG with the same generator base (issue 20).

One run, all through ragtune's CLI: `data clara` writes each stage's records from the 500 training questions
(compress: the gold passages; instruct: the BM25 top 3; e2e: the BM25 top 10 with the gold ones as positives);
`train clara` trains the three stages in a row on the packaged SmolLM2-135M-Instruct, each from the previous run;
then `eval rag` answers the same seeded test questions with BM25's top 3 for every system: the base SmolLM2
reading the passages as text, and CLaRa after each stage reading them as memory vectors (labels by likelihood;
accuracy and macro-F1). Reported beside them: the context each system's generator reads per question (prompt
tokens of the text context against memory-token slots), and each stage's training time.
With --synth-chunks N, stage 1 also reads `data synth --clara` records (questions with answers, and paraphrases)
written by the base SmolLM2 from N passages of the training questions: more stage-1 data, as the paper's. With
--text-sft-steps N, a text-RAG generator is tuned too (`data rag-sft` over the same BM25 top 3, `train llm` with the
packaged LoRA recipe for N steps) and answers in the same table: the "tuned text RAG" the target compares with.
Run: python -m benchmarks.clara_pubmedqa [--steps 150] [--compress-steps N] [--synth-chunks N]
     [--text-sft-steps N] [--questions 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from ragtune.models.packaged_llm import DEFAULT_GENERATOR
from ragtune.utils import packaged_resource

PUBMEDQA = packaged_resource("pubmedqa")


def ragtune(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ragtune", "-q", "--json", *map(str, args)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ragtune {' '.join(map(str, args))} failed:\n{(proc.stderr + proc.stdout)[-3000:]}")
    return proc.stdout


def text_context_tokens(questions: int) -> float:
    """Mean prompt tokens of the BM25 top-3 context the text generator reads, over the first test questions."""
    from transformers import AutoTokenizer

    from ragtune.config.rag import DEFAULT_PROMPT, RAGSection
    from ragtune.data.beir import load_beir
    from ragtune.models.resolve import resolve_model
    from ragtune.rag.evaluate import context_sources, label_prompt
    from ragtune.rag.pipeline import build_context
    from ragtune.retrieval.pipeline import PipelineBuilder

    ir = load_beir(PUBMEDQA, "test")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_GENERATOR))
    settings = RAGSection(k=3, prompt=label_prompt(["yes", "no", "maybe"]) or DEFAULT_PROMPT)
    qids = list(ir.queries)[:questions]
    sub = type(ir)(ir.corpus, {q: ir.queries[q] for q in qids}, {q: ir.qrels[q] for q in qids}, ir.name)
    sources = context_sources("bm25", PipelineBuilder(ir.corpus), sub, 3)
    count = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    lengths = [count(build_context(sources[q], count, settings.context_tokens)[0]) for q in qids]
    return sum(lengths) / len(lengths)


def synth_stage1(root: Path, chunks: int) -> Path:
    """`data synth --clara` over the first `chunks` passages judged for the training questions (never a test
    question's), with BM25 over those passages for the round trip."""
    from ragtune.data.beir import load_beir

    ir = load_beir(PUBMEDQA, "train")
    judged = sorted({d for q in ir.qrels.values() for d in q})[:chunks]
    docs = root / "train_passages.jsonl"
    docs.write_text("".join(json.dumps({"id": d, "text": ir.corpus[d]}) + "\n" for d in judged),
                    encoding="utf-8")
    ragtune("data", "chunk", docs, "--out", root / "train_chunks.jsonl", "--chunk-size", "256")
    report = json.loads(ragtune("data", "synth", root / "train_chunks.jsonl", "--out", root / "synth", "--clara",
                                "--questions", "2", "--overwrite"))
    print(f"synth: {report}", flush=True)
    return root / "synth" / "clara_compress.jsonl"


def tune_text_generator(root: Path, steps: int) -> Path:
    """The packaged LoRA RAG-SFT recipe, `steps` optimizer steps on BM25-top-3 chats of the training questions."""
    chats = root / "text_sft.jsonl"
    ragtune("data", "rag-sft", PUBMEDQA, "-o", chats, "-p", "bm25", "-k", "3", "--sentences", "1")
    ragtune("train", "llm", "-c", packaged_resource("rag_llm.yaml"), f"data.train={chats}",
            f"output.dir={root / 'text-sft'}", f"train.max_steps={steps}", "--allow-regression", "--overwrite")
    return root / "text-sft"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per stage")
    parser.add_argument("--compress-steps", type=int, help="optimizer steps of stage 1 (default: --steps)")
    parser.add_argument("--synth-chunks", type=int, default=0, help="add `data synth --clara` records from this "
                        "many training passages to stage 1")
    parser.add_argument("--text-sft-steps", type=int, default=0, help="also tune a text-RAG generator this many "
                        "steps and compare")
    parser.add_argument("--questions", type=int, default=200, help="seeded test questions answered")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="the runs under --out are trained: evaluate them")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="clara-"))
    common = ["train.per_device_train_batch_size=4", "eval.generation_samples=8", "eval.max_new_tokens=8",
              "data.max_eval_samples=32", "--allow-regression", "--overwrite"]
    seconds, runs, previous, extra = {}, {}, None, {}
    text_tuned = []
    if args.text_sft_steps:  # first: the cheapest part to fail
        if not args.reuse and not (root / "text-sft" / "final").is_dir():  # an earlier attempt's run is kept
            start = time.perf_counter()
            tune_text_generator(root, args.text_sft_steps)
            seconds["text_sft"] = round(time.perf_counter() - start, 1)
            print(f"text SFT: {seconds['text_sft']:.0f} s", flush=True)
        text_tuned = [root / "text-sft" / "final"]
    if args.synth_chunks and not args.reuse:
        start = time.perf_counter()
        synthesized = synth_stage1(root, args.synth_chunks)
        seconds["synth"] = round(time.perf_counter() - start, 1)
        extra["compress"] = synthesized.read_text(encoding="utf-8")
    for stage, lr in (("compress", 1e-4), ("instruct", 1e-4), ("e2e", 5e-6)):
        steps = (args.compress_steps or args.steps) if stage == "compress" else args.steps
        budget = [f"train.max_steps={steps}", f"train.eval_steps={steps}", f"train.save_steps={steps}"]
        if args.reuse:
            runs[stage] = json.loads((root / stage / "eval_after.json").read_text())["metrics"]
            seconds[stage] = None
            continue
        records = root / f"{stage}.jsonl"
        ragtune("data", "clara", PUBMEDQA, "--stage", stage, "-o", records, "-p", "bm25", "-k", "3",
                "--candidates", "10", "--sentences", "1")
        if stage in extra:
            with records.open("a", encoding="utf-8") as f:
                f.write(extra[stage])
        start = time.perf_counter()
        init = [f"init_from={previous}"] if previous else []
        ragtune("train", "clara", f"stage={stage}", *init, f"data.train={records}", f"output.dir={root / stage}",
                f"train.learning_rate={lr}", *budget, *common)
        seconds[stage] = round(time.perf_counter() - start, 1)
        runs[stage] = json.loads((root / stage / "eval_after.json").read_text())["metrics"]
        previous = root / stage
        print(f"{stage}: {seconds[stage]:.0f} s; held-out {runs[stage]}", flush=True)
    generators = [DEFAULT_GENERATOR, *text_tuned, *(root / s for s in ("compress", "instruct", "e2e"))]
    found = json.loads(ragtune("eval", "rag", "--data", PUBMEDQA, "--split", "test", "-k", "3",
                               "--max-queries", args.questions, "--max-new-tokens", "1",
                               *[a for g in generators for a in ("-p", "bm25", "--generator", g)]))
    systems = {s["name"]: s["metrics"] for s in found["systems"]}
    text_tokens = round(text_context_tokens(args.questions), 1)
    memory = json.loads((root / "compress" / "final" / "clara.json").read_text())
    slots = 3 * memory["doc_max_length"] // memory["compress_rate"]
    print(f"context per question: text RAG {text_tokens} tokens, CLaRa {slots} memory slots "
          f"({text_tokens / slots:.1f}x shorter)")
    for name, metrics in systems.items():
        print(f"  {name}: {metrics}")
    write_result("clara_pubmedqa", {"steps": args.steps, "compress_steps": args.compress_steps or args.steps,
                                    "synth_chunks": args.synth_chunks, "text_sft_steps": args.text_sft_steps,
                                    "questions": args.questions, "train_seconds": seconds,
                                    "held_out": runs, "systems": systems, "text_context_tokens": text_tokens,
                                    "clara_context_slots": slots, "runs": str(root)})


if __name__ == "__main__":
    main()
