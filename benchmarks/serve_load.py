"""`ragtune serve` under load and faults, loopback only, bounded in time.

Load: 8 concurrent clients for --seconds against /v1/embeddings (batches of 1 to 16 SciFact queries) on ragtune's
server and on a naive FastAPI server that calls `model.encode` per request (same model, same machine, one after
the other), then against ragtune's /v1/search (hybrid, no rerank) on the full SciFact index (5,183 abstracts).
Faults: 1,000 bad requests of mixed kinds (the server must still answer, memory within 10%); `index add` under
search load (no failed request, the new document found after); kill -9 under load and a restart (the same index
served). infinity-emb is compared where its `infinity_emb` command is found (--infinity, else on PATH): it pins
sentence-transformers < 4 and numpy < 2, so it lives in a venv of its own (see RESULTS.md); it runs at its default
dtype and at bfloat16, the precision ragtune's encoder chose on a CPU where bf16 measured faster.

Targets: zero errors; embeddings throughput >= 2x the naive server's at 8 clients; search p95 < 100 ms.

Run alone:  python -m benchmarks.serve_load [--seconds 60] [--clients 8] [--infinity /venv/bin/infinity_emb]
            python -m benchmarks.serve_load --search-only   (the search load alone, cache off)
            python -m benchmarks.serve_load --search-only --embedder DIR   (and then again on an index built with
                the exported embedder DIR, e.g. `ragtune export openvino`'s, side by side in one run)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
OUT = ROOT / "benchmarks" / "out" / "serve_load"
RAGTUNE = str(Path(sys.executable).parent / "ragtune")
NAIVE = textwrap.dedent("""
    import sys
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sentence_transformers import SentenceTransformer
    import uvicorn
    model = SentenceTransformer(sys.argv[1], device="cpu")
    app = FastAPI()
    class Body(BaseModel):
        input: list[str]
    @app.post("/v1/embeddings")
    def embed(body: Body):
        vectors = model.encode(body.input, normalize_embeddings=True)
        return {"data": [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
    """A server process whose stderr goes to OUT/NAME.log (a pipe nobody reads would fill and stall it)."""
    log = OUT / f"{name}.log"
    with log.open("a", encoding="utf-8") as sink:
        proc = subprocess.Popen(command, stderr=sink, stdout=sink, text=True, env=env)
    proc.log = log
    return proc


def wait_ready(url: str, proc: subprocess.Popen, path: str = "/health", timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); its log: {proc.log}")
        try:
            if httpx.get(url + path, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not start in {timeout} s")


def start_ragtune(index: Path, port: int, *settings: str) -> subprocess.Popen:
    proc = launch([RAGTUNE, "-q", "serve", str(index), *settings, "--port", str(port)], "ragtune")
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return proc


def load(url: str, path: str, make_body, clients: int, seconds: float) -> dict:
    """`clients` threads, each posting `make_body(rng)` back to back for `seconds`; latencies and errors."""
    latencies: list[float] = []
    errors, items = [0], [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                body = make_body(rng)
                start = time.perf_counter()
                try:
                    ok = http.post(url + path, json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    items[0] += len(body.get("input", [1]))
                    errors[0] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0], "items": items[0], "seconds": round(wall, 1),
            "requests_per_s": round(len(latencies) / wall, 2), "items_per_s": round(items[0] / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def resident_mb(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("ragtune_resident_memory_bytes "))) / 2**20


def bad_requests(url: str, n: int) -> dict:
    kinds = [b'{"input": ', b'{"input": "caf\xe9"}', b'["a"]', b"{}", b'{"input": 42}', b'{"input": []}',
             b'{"input": "a", "nope": 1}', json.dumps({"input": ["x"] * 1000}).encode(), b"x" * 2_000_000]
    before = resident_mb(url)
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60) as http:
        for i in range(n):
            status = http.post(url + "/v1/embeddings", content=kinds[i % len(kinds)],
                               headers={"content-type": "application/json"}).status_code
            statuses[status] = statuses.get(status, 0) + 1
        good = http.post(url + "/v1/embeddings", json={"input": ["still answering"]}).status_code
    after = resident_mb(url)
    return {"bad_requests": n, "statuses": statuses, "good_after": good, "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1), "rss_growth": round(after / before - 1, 3),
            "met": good == 200 and all(400 <= s < 500 for s in statuses) and after <= before * 1.10}


def infinity(args, model: str, dtype: str, embed_body) -> dict:
    """infinity-emb's server on the same model (torch engine, CPU), loaded like the others."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    proc = launch([args.infinity, "v2", "--model-id", model, "--served-model-name", "minilm", "--engine", "torch",
                   "--device", "cpu", "--dtype", dtype, "--port", str(port), "--log-level", "warning"],
                  f"infinity-{dtype}", env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return {"dtype": dtype, **load(f"http://127.0.0.1:{port}", "/embeddings",
                                       lambda rng: {**embed_body(rng), "model": "minilm"}, args.clients,
                                       args.seconds)}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--infinity", default=shutil.which("infinity_emb"), help="infinity-emb's command")
    parser.add_argument("--search-only", action="store_true",
                        help="only /v1/search without the embedding cache (every query encoded), for profiling")
    parser.add_argument("--embedder", type=Path,
                        help="with --search-only: also serve an index built with this embedder (an exported one)")
    args = parser.parse_args()
    index = scifact_index(OUT / "index")
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").read_text(encoding="utf-8").split("\n")
               if line.strip()]

    def embed_body(rng: random.Random) -> dict:
        return {"input": rng.sample(queries, rng.randint(1, 16))}

    results: dict = {"clients": args.clients, "seconds": args.seconds}
    port = free_port()
    if args.search_only:
        return search_only(index, port, queries, args)
    if args.embedder:
        parser.error("--embedder goes with --search-only")
    server = start_ragtune(index, port)
    url = f"http://127.0.0.1:{port}"
    try:
        results["ragtune_embeddings"] = load(url, "/v1/embeddings", embed_body, args.clients, args.seconds)
        print("ragtune /v1/embeddings", results["ragtune_embeddings"], flush=True)
        results["ragtune_search"] = search_load(url, queries, args)
        print("ragtune /v1/search", results["ragtune_search"], flush=True)
        results["bad_requests"] = bad_requests(url, 1000)
        print("bad requests", results["bad_requests"], flush=True)
        extra = OUT / "extra.txt"
        extra.write_text("Okapi and quokka gait analysis under microgravity.", encoding="utf-8")
        during: dict = {}
        loader = threading.Thread(target=lambda: during.update(load(
            url, "/v1/search", lambda rng: {"query": rng.choice(queries), "k": 5}, args.clients, 20)))
        loader.start()
        time.sleep(3)
        subprocess.run([RAGTUNE, "-q", "index", "add", str(index), str(extra)], check=True)
        loader.join()
        time.sleep(1.5)
        hit = httpx.post(url + "/v1/search", json={"query": "quokka gait microgravity", "k": 1,
                                                   "first_stage": "bm25"}).json()
        results["index_add_under_load"] = {**during, "found_after": "quokka" in hit["results"][0]["text"],
                                           "version_after": hit["index_version"]}
        print("index add under load", results["index_add_under_load"], flush=True)
        subprocess.run([RAGTUNE, "-q", "index", "delete", str(index), "--source", str(extra)], check=True)
        killer = threading.Thread(target=lambda: (time.sleep(3), os.kill(server.pid, signal.SIGKILL)))
        killer.start()
        killed = load(url, "/v1/search", lambda rng: {"query": rng.choice(queries), "k": 5}, args.clients, 6)
        killer.join()
        server.wait()
        started = time.perf_counter()
        server = start_ragtune(index, port)
        again = httpx.post(url + "/v1/search", json={"query": queries[0], "k": 3}).json()
        results["kill_and_restart"] = {"requests_during": killed["requests"], "failed_after_kill": killed["errors"],
                                       "restart_s": round(time.perf_counter() - started, 1),
                                       "version_after_restart": again["index_version"],
                                       "answers_after_restart": len(again["results"])}
        print("kill -9 and restart", results["kill_and_restart"], flush=True)
    finally:
        server.terminate()
        server.wait()
    # the load repeats SciFact's 1,109 queries, so the runs above are mostly embedding-cache hits: the same loads
    # without the cache compare model work with model work, and time searches as if every query were new
    server = start_ragtune(index, port, "cache_size=0")
    try:
        results["ragtune_embeddings_no_cache"] = load(url, "/v1/embeddings", embed_body, args.clients, args.seconds)
        print("ragtune /v1/embeddings, no cache", results["ragtune_embeddings_no_cache"], flush=True)
        results["ragtune_search_no_cache"] = search_load(url, queries, args)
        print("ragtune /v1/search, no cache", results["ragtune_search_no_cache"], flush=True)
    finally:
        server.terminate()
        server.wait()
    manifest = json.loads((index / (index / "CURRENT").read_text().strip() / "manifest.json").read_text())
    naive_port = free_port()
    naive = launch([sys.executable, "-c", NAIVE, manifest["embedder"]["path"], str(naive_port)], "naive")
    try:
        wait_ready(f"http://127.0.0.1:{naive_port}", naive, "/docs")
        results["naive_embeddings"] = load(f"http://127.0.0.1:{naive_port}", "/v1/embeddings", embed_body,
                                           args.clients, args.seconds)
        print("naive /v1/embeddings", results["naive_embeddings"], flush=True)
    finally:
        naive.terminate()
        naive.wait()
    ragtune = results["ragtune_embeddings_no_cache"]["items_per_s"]
    ratio = ragtune / results["naive_embeddings"]["items_per_s"]
    results["embeddings_ratio_vs_naive"] = round(ratio, 2)
    if args.infinity:
        for dtype in ("auto", "bfloat16"):
            results[f"infinity_embeddings_{dtype}"] = infinity(args, manifest["embedder"]["path"], dtype,
                                                               embed_body)
            print(f"infinity-emb ({dtype}) /embeddings", results[f"infinity_embeddings_{dtype}"], flush=True)
        best = max(results[f"infinity_embeddings_{d}"]["items_per_s"] for d in ("auto", "bfloat16"))
        results["embeddings_ratio_vs_infinity"] = round(ragtune / best, 2)
    else:
        results["infinity_emb"] = "infinity_emb not found (give --infinity); not measured"
    print(f"embeddings (no cache): ragtune {ragtune} texts/s, naive "
          f"{results['naive_embeddings']['items_per_s']} texts/s, ratio {ratio:.2f} (target >= 2); search p95 "
          f"{results['ragtune_search_no_cache']['p95_ms']} ms without the cache (target < 100); vs infinity-emb's best: "
          f"{results.get('embeddings_ratio_vs_infinity', 'not measured')} (target >= 1)")
    write_result("serve_load", results)


def search_load(url: str, queries: list[str], args) -> dict:
    """The search load: SciFact queries, hybrid, k=10, `args.clients` clients for `args.seconds`."""
    return load(url, "/v1/search", lambda rng: {"query": rng.choice(queries), "k": 10}, args.clients, args.seconds)


def scifact_index(index: Path, *embedder: str) -> Path:
    """The full SciFact corpus as a ragtune index at `index`, built once (with `embedder` when given)."""
    OUT.mkdir(parents=True, exist_ok=True)
    if not (index / "CURRENT").is_file():
        print(f"building the SciFact index {index.name} (once) ...", flush=True)
        subprocess.run([RAGTUNE, "-q", "index", "build", str(SCIFACT / "corpus.jsonl"), "--out", str(index),
                        "--overwrite", *(("--embedder", *embedder) if embedder else ())], check=True)
    return index


def search_only(index: Path, port: int, queries: list[str], args) -> None:
    indexes = {"ragtune_search_no_cache": index}
    if args.embedder:
        from ragtune.models.fingerprint import model_fingerprint

        name = args.embedder.resolve().name  # the index is kept per model: a re-export is indexed anew
        folder = OUT / f"index-{name}-{(model_fingerprint(args.embedder) or 'unknown')[:12]}"
        indexes[f"ragtune_search_no_cache_{name}"] = scifact_index(folder, str(args.embedder.resolve()))
    results: dict = {"clients": args.clients, "seconds": args.seconds,
                     "embedder": str(args.embedder) if args.embedder else None}
    for key, folder in indexes.items():
        server = start_ragtune(folder, port, "cache_size=0")
        try:
            results[key] = search_load(f"http://127.0.0.1:{port}", queries, args)
        finally:
            server.terminate()
            server.wait()
        print(key, results[key], f"(server pid was {server.pid})", flush=True)
    if args.embedder:
        p95 = [results[key]["p95_ms"] for key in indexes]
        results["p95_ratio"] = round(p95[0] / p95[1], 3)
        print(f"search p95: {p95[0]} ms -> {p95[1]} ms with {args.embedder} ({results['p95_ratio']}x)", flush=True)
    write_result("serve_search", results)


if __name__ == "__main__":
    main()
