"""Looking names up with a helpful message when they are not there."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """`unknown GPU 'a10' (did you mean 'a10g'? known: a10g, l4, ...)`."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown {kind} '{name}' ({hint}known: {', '.join(names)})"
