"""'Did you mean ...?' for a name someone typed: the closest of the names that exist."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
  """The choice closest to `word`, or None when none is close."""
  match = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
  return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
  """' (did you mean 'demo'?)' for the choice closest to `word`, or '' when none is close."""
  match = closest(word, choices)
  return f" (did you mean {match!r}?)" if match else ""
