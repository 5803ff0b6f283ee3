"""Build the embedded PubMedQA PQA-L collection (MIT) in BEIR layout from ../shared/data/pubmedqa_pqal.

Corpus: every context passage of the 1,000 items (3,358). Queries: the 1,000 questions. qrels/test.tsv: the official
500 test questions (test_ground_truth.json) against their own passages; qrels/train.tsv: the other 500.
Run: python scripts/build_pubmedqa.py [SRC_DIR] [OUT_DIR]
"""

import json
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pubmedqa_pqal")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "src/ragtune/resources/pubmedqa")
items = json.loads((src / "ori_pqal.json").read_text(encoding="utf-8"))
test = set(json.loads((src / "test_ground_truth.json").read_text(encoding="utf-8")))
(out / "qrels").mkdir(parents=True, exist_ok=True)
with open(out / "corpus.jsonl", "w", encoding="utf-8") as corpus, \
        open(out / "queries.jsonl", "w", encoding="utf-8") as queries:
    for pmid, item in items.items():
        queries.write(json.dumps({"_id": pmid, "text": item["QUESTION"],
                                  "metadata": {"final_decision": item["final_decision"],
                                               "long_answer": item["LONG_ANSWER"]}}) + "\n")
        for i, (context, label) in enumerate(zip(item["CONTEXTS"], item["LABELS"])):
            corpus.write(json.dumps({"_id": f"{pmid}-{i}", "title": "", "text": context,
                                     "metadata": {"pmid": pmid, "section": label}}) + "\n")
for split, keep in (("train", lambda p: p not in test), ("test", lambda p: p in test)):
    with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for pmid, item in items.items():
            if keep(pmid):
                for i in range(len(item["CONTEXTS"])):
                    qrels.write(f"{pmid}\t{pmid}-{i}\t1\n")
print(f"wrote {out}")
