"""How many epochs an embedder trains when its config does not say: whole epochs enough for `train.min_steps`
optimizer steps.

One epoch of a small set is a handful of steps; on SciFact (919 pairs, 26 steps an epoch) a second epoch added
+0.025 NDCG@10 on test, while on PubMedQA (1,669 pairs, 47 steps) it added nothing (benchmarks/epochs_rule.py,
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math


def steps_per_epoch(train, examples: int, processes: int = 1) -> int:
    """Optimizer steps in one pass over `examples` training rows."""
    batches = math.ceil(examples / (train.per_device_train_batch_size * processes))
    return max(1, math.ceil(batches / train.gradient_accumulation_steps))


def epochs_for(train, examples: int, processes: int = 1) -> tuple[float, str]:
    """(num_train_epochs, why): as configured where the config names the epochs or max_steps (or sets min_steps to
    null); else the fewest whole epochs that make `train.min_steps` steps, at least num_train_epochs and at most
    `train.max_auto_epochs`."""
    if train.max_steps > 0:
        return train.num_train_epochs, f"max_steps {train.max_steps}"
    if "num_train_epochs" in train.model_fields_set or not train.min_steps:
        return train.num_train_epochs, "as configured"
    per_epoch = steps_per_epoch(train, examples, processes)
    epochs = min(train.max_auto_epochs, max(math.ceil(train.num_train_epochs), math.ceil(train.min_steps / per_epoch)))
    return float(epochs), (f"{per_epoch} steps an epoch; at least {train.min_steps} steps (train.min_steps), at most "
                           f"{train.max_auto_epochs} epochs")
