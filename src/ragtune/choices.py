"""Messages for a name that is not one of the known choices: `unknown loss 'mrnl' (did you mean 'mnrl'?); ...`."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest choice (by spelling, or a choice that `name` ends or starts
    with as a word, such as 'k' for 'top_k'), or an empty string."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    close = close or [c for c in choices if str(name).endswith(f"_{c}") or str(name).startswith(f"{c}_")][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], listing: str | None = None) -> str:
    """The one-line message for an unknown `kind` called `name`; `listing` replaces the default list of choices."""
    choices = list(choices)
    return f"unknown {kind} '{name}'{did_you_mean(name, choices)}; {listing or 'choose one of ' + ', '.join(sorted(choices))}"


def one_of(kind: str, name: str, choices: Iterable[str], listing: str | None = None) -> str:
    """Return `name` when it is a known choice; raise ValueError with the message above otherwise."""
    choices = list(choices)
    if name not in choices:
        raise ValueError(unknown(kind, name, choices, listing))
    return name
