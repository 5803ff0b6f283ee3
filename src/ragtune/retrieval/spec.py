"""Pipeline specs: `bm25 | dense:MODEL | hybrid(SPEC,SPEC[,...]) | SPEC+rerank:MODEL[@K] | SPEC+maxsim:MODEL[@K]`,
parsed with positions. The second stage is a cross-encoder (rerank) or a late-interaction model (maxsim).

A bad spec fails with the column where parsing stopped and what was expected there, before any model loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ragtune.errors import ConfigError

SECOND_STAGES = {"+rerank:": "rerank", "+maxsim:": "maxsim"}


@dataclass(frozen=True)
class Spec:
    kind: str  # bm25 | dense | hybrid
    model: str | None = None  # dense model
    parts: tuple[Spec, ...] = ()  # hybrid members
    reranker: str | None = None  # the second stage's model
    rerank_k: int | None = None
    text: str = field(default="", compare=False)
    second: str = "rerank"  # rerank (a cross-encoder) | maxsim (late interaction)

    def models(self) -> list[tuple[str, str]]:
        """Every (role, model) the spec needs, for checking before anything loads."""
        found = [("dense", self.model)] if self.model else []
        for part in self.parts:
            found += part.models()
        return found + ([(self.second, self.reranker)] if self.reranker else [])


class _Parser:
    def __init__(self, text: str, where: str):
        self.text, self.pos, self.where = text, 0, where

    def fail(self, expected: str) -> ConfigError:
        got = self.text[self.pos:self.pos + 20] or "the end"
        pointer = f"{self.text[:self.pos]}>>>{self.text[self.pos:]}"
        return ConfigError(f"{self.where} '{self.text}': at column {self.pos + 1} ({pointer}): expected {expected}, got "
                           f"'{got}'; write bm25, dense:MODEL, hybrid(SPEC,SPEC), SPEC+rerank:MODEL@K or "
                           "SPEC+maxsim:MODEL@K")

    def take(self, literal: str) -> bool:
        """Consume `literal` (and the spaces around it, for ',', '(' and ')')."""
        pos = self.pos
        if literal in (",", ")"):
            while pos < len(self.text) and self.text[pos] == " ":
                pos += 1
        if self.text.startswith(literal, pos):
            self.pos = pos + len(literal)
            if literal.endswith(("(", ",")):
                while self.pos < len(self.text) and self.text[self.pos] == " ":
                    self.pos += 1
            return True
        return False

    def name(self, what: str) -> str:
        """A model name or path: runs to the next ',', ')', '+rerank:', '+maxsim:' or '@K' at the end."""
        start, depth = self.pos, 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in ",)" and depth == 0 or self.text.startswith(tuple(SECOND_STAGES), self.pos):
                break
            rest = self.text[self.pos + 1:].split(")")[0].split(",")[0]
            if char == "@" and re.fullmatch(r"[-+]?[\d.]*", rest):  # @K, or a bad count such as @-5 or @0.5
                break
            depth += (char == "(") - (char == ")")
            self.pos += 1
        if not self.text[start:self.pos].strip():
            raise self.fail(f"a {what} model name or path")
        return self.text[start:self.pos].strip()

    def stage(self) -> Spec:
        start = self.pos
        if self.take("hybrid("):
            parts = [self.spec()]
            while self.take(","):
                parts.append(self.spec())
            if not self.take(")"):
                raise self.fail("',' or ')'")
            if len(parts) < 2:
                self.pos = start
                raise self.fail("hybrid of at least two pipelines")
            return Spec("hybrid", parts=tuple(parts))
        if self.take("dense:"):
            return Spec("dense", model=self.name("dense"))
        if self.take("bm25"):
            return Spec("bm25")
        raise self.fail("bm25, dense:MODEL or hybrid(...)")

    def spec(self) -> Spec:
        start = self.pos
        stage = self.stage()
        second = next((kind for literal, kind in SECOND_STAGES.items() if self.take(literal)), None)
        if second:
            model = self.name(second)
            k = None
            if self.take("@"):
                digits, at = "", self.pos
                while self.pos < len(self.text) and self.text[self.pos].isdigit():
                    digits += self.text[self.pos]
                    self.pos += 1
                if not digits or int(digits) == 0:
                    self.pos = at  # point at the bad count, not past it
                    raise self.fail("a positive number of candidates after '@'")
                k = int(digits)
            stage = Spec(stage.kind, stage.model, stage.parts, model, k, second=second)
        return Spec(stage.kind, stage.model, stage.parts, stage.reranker, stage.rerank_k,
                    self.text[start:self.pos], stage.second)


def parse_spec(text: str, where: str = "--pipeline") -> Spec:
    """Parse a pipeline spec; raise ConfigError naming where it came from and the column of the mistake."""
    text = text.strip()
    parser = _Parser(text, where)
    spec = parser.spec()
    if parser.pos != len(text):
        raise parser.fail("the end of the spec (or +rerank:MODEL, +maxsim:MODEL)")
    return spec
