"""final/README.md of a `train llm` LoRA run: the before/after proof and load code that works as written.

PEFT's own card is a placeholder, and the standard PEFT load fails for a run that added chat tokens (the base's
embeddings must first grow to the saved tokenizer), so the card shows that step. `ragtune export merge RUN` stays
the one-step path to a plain model folder.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.eval.report import Comparison, summary_markdown
from ragtune.utils import write_atomic

LOAD = '''```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{final}")
base = AutoModelForCausalLM.from_pretrained("{base}")
{resize}model = PeftModel.from_pretrained(base, "{final}")
```'''


def write_adapter_card(final: Path, base: str, base_path: str, added_tokens: list[str], comparison: Comparison,
                       title: str, details: dict[str, str], provenance: str | None) -> Path:
    """README.md in `final`: model-card front matter, the run's before/after table, and how to load it."""
    resize = ("base.resize_token_embeddings(len(tokenizer))  # the run added " + ", ".join(added_tokens) + "\n"
              if added_tokens else "")
    lines = ["---", f"base_model: {base}", "library_name: peft", "pipeline_tag: text-generation",
             "tags: [ragtune, lora, sft]", "---", ""]
    lines += summary_markdown(comparison, title, details).splitlines()
    if provenance:
        lines += ["", f"**Base weights:** {provenance}."]
    lines += ["", "## Load", "", "One step, a plain model folder: `ragtune export merge RUN_DIR`. Or load the adapter "
              "on its base with PEFT:", "", LOAD.format(final=final.resolve(), base=base, resize=resize)]
    if base_path != base:
        lines += ["", f"Offline on the machine that trained it, the base resolves to `{base_path}`."]
    path = final / "README.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path
