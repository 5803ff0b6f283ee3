"""The base of every config section, and the small sections that several others embed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
Device = Literal[DEVICES]
Precision = Literal[PRECISIONS]


def device_field():
    return Field("auto", description="where models run; auto picks CUDA, MPS, CPU")


def precision_field():
    return Field("auto", description="auto: bf16 where supported (CUDA; CPUs where it times faster), fp16 on older "
                 "GPUs, else fp32")


def check_placement(flag: str, value: str) -> str:
    """A device or precision named on the command line (`--device`, `--precision`, `--dtype`), checked as a config
    key is; ConfigError otherwise."""
    from ragtune.choices import did_you_mean
    from ragtune.errors import ConfigError

    choices = DEVICES if flag == "--device" else PRECISIONS
    if value not in choices:
        raise ConfigError(f"{flag} '{value}'{did_you_mean(value, choices)}: choose one of {', '.join(choices)}")
    return value


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class PromptsSection(Section):
    query: str | None = Field(None, description="prefix for queries, e.g. 'query: '")
    document: str | None = Field(None, description="prefix for documents, e.g. 'passage: '")
