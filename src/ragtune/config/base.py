"""The base of every config section, and the small sections that several others embed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class PromptsSection(Section):
    query: str | None = Field(None, description="prefix for queries, e.g. 'query: '")
    document: str | None = Field(None, description="prefix for documents, e.g. 'passage: '")
