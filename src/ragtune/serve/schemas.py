"""Request bodies, checked strictly: unknown fields, wrong types, empty inputs and inputs over the limits are 4xx
with a message that names the field. OpenAI fields that change nothing here (user, seed, ...) are accepted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EmbeddingsRequest(Strict):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] | None = Field(None, description="which prompt the embedder uses")
    prompt_name: Literal["query", "document"] | None = None  # sentence-transformers' name for input_type
    dimensions: int | None = Field(None, gt=0)
    user: str | None = None


class RerankRequest(Strict):
    query: str
    documents: list[str]
    top_n: int | None = Field(None, gt=0)
    return_documents: bool = False
    model: str | None = None


class SearchRequest(Strict):
    query: str
    k: int | None = Field(None, gt=0, le=100)
    first_stage: Literal["hybrid", "dense", "bm25"] | None = None
    rerank: bool = Field(True, description="rerank with the server's cross-encoder, when it has one")
    min_score: float | None = None
    filter: dict | None = Field(None, description="metadata filter, LangChain's shape: {\"team\": \"search\", "
                                "\"year\": {\"$gte\": 2024}}")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, gt=0, le=4096)
    max_completion_tokens: int | None = Field(None, gt=0, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: Literal[1] = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    filter: dict | None = Field(None, description="ragtune's extension (OpenAI clients: extra_body): the metadata "
                                "filter of the retrieval behind the answer, as in /v1/search")
