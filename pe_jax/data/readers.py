"""Line-based readers (plain text, JSON lines, CSV, TSV) that keep texts byte-faithful.

Lines end at b"\\n" only: `str.splitlines` would also split on U+2028, U+0085 and friends, which
occur inside tweets. Bad UTF-8 is replaced with U+FFFD and counted, never fatal; a structurally
malformed line raises `DataFormatError` naming file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any

_REPLACEMENT = "\ufffd"


class DataFormatError(ValueError):
  """A malformed record: `path:line: message`."""

  def __init__(self, path: str | os.PathLike, line: int, message: str):
    super().__init__(f"{path}:{line}: {message}")
    self.path = str(path)
    self.line = line


@dataclasses.dataclass
class TextStats:
  """What was tolerated while reading one split."""

  utf8_replacements: int = 0  # invalid UTF-8 sequences / lone surrogates replaced by U+FFFD
  empty_texts: int = 0  # texts that are empty or whitespace only (kept)

  def decode(self, raw: bytes) -> str:
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      text = raw.decode("utf-8", errors="replace")
      self.utf8_replacements += text.count(_REPLACEMENT) - raw.count(_REPLACEMENT.encode())
      return text

  def text(self, value: Any, path: str | os.PathLike, line: int, field: str = "text", *,
           count_empty: bool = True) -> str:
    """Validates a text field, replaces lone surrogates (from JSON escapes) and counts empties."""
    if not isinstance(value, str):
      raise DataFormatError(path, line, f"field {field!r} must be a string, got {value!r}")
    try:
      value.encode("utf-8")
    except UnicodeEncodeError:
      # JSON "\ud83d" without its pair decodes to a lone surrogate that UTF-8 cannot encode.
      fixed = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
      self.utf8_replacements += fixed.count(_REPLACEMENT) - value.count(_REPLACEMENT)
      value = fixed
    if count_empty and not value.strip():
      self.empty_texts += 1
    return value


def split_lines(data: bytes) -> list[bytes]:
  """Lines of `data` without their b"\\n"; a final line without newline still counts."""
  lines = data.split(b"\n")
  if lines[-1] == b"":
    lines.pop()
  return lines


def read_text_lines(path: str | os.PathLike, stats: TextStats) -> list[str]:
  """One decoded string per line (line i+1 of the file is element i)."""
  with open(path, "rb") as f:
    return [stats.decode(raw) for raw in split_lines(f.read())]


def read_jsonl(path: str | os.PathLike, stats: TextStats) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) per line; every line must hold one JSON object."""
  records = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(split_lines(f.read()), start=1):
      try:
        obj = json.loads(stats.decode(raw))
      except json.JSONDecodeError as e:
        raise DataFormatError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(obj, dict):
        raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
      records.append((lineno, obj))
  return records


def read_tsv(path: str | os.PathLike, stats: TextStats, *, num_fields: int,
             header: tuple[str, ...] | None = None) -> list[tuple[int, list[str]]]:
  """(line number, fields) per line, split on every tab: these TSVs use no quoting.

  `header`: the first line must be exactly these field names, and is not returned.
  """
  with open(path, "rb") as f:
    lines = split_lines(f.read())
  rows = []
  for lineno, raw in enumerate(lines, start=1):
    fields = stats.decode(raw).split("\t")
    if header is not None and lineno == 1:
      if tuple(fields) != header:
        raise DataFormatError(path, lineno, f"expected header {header}, got {tuple(fields)}")
      continue
    if len(fields) != num_fields:
      raise DataFormatError(path, lineno, f"expected {num_fields} tab-separated fields, got "
                            f"{len(fields)}")
    rows.append((lineno, fields))
  return rows


def read_csv(path: str | os.PathLike, stats: TextStats, *,
             num_fields: int) -> list[tuple[int, list[str]]]:
  """(first line number, fields) per CSV record, standard quoting, no header.

  A quoted field may span lines, so records and lines can differ in number; the line given is
  where the record starts.
  """
  with open(path, "rb") as f:
    text = stats.decode(f.read())
  reader = csv.reader(io.StringIO(text, newline=""), strict=True)
  rows = []
  start = 1
  while True:
    try:
      fields = next(reader)
    except StopIteration:
      break
    except csv.Error as e:
      raise DataFormatError(path, start, f"CSV error: {e}") from None
    if len(fields) != num_fields:
      raise DataFormatError(path, start, f"expected {num_fields} CSV fields, got {len(fields)}")
    rows.append((start, fields))
    start = reader.line_num + 1
  return rows


def parse_int(value: str, path: str | os.PathLike, line: int, field: str, *,
              allowed: range | None = None) -> int:
  """`value` as an int (surrounding whitespace tolerated), optionally within `allowed`."""
  try:
    number = int(value.strip())
  except ValueError:
    raise DataFormatError(path, line, f"{field} {value!r} is not an integer") from None
  if allowed is not None and number not in allowed:
    raise DataFormatError(path, line, f"{field} {number} is outside {allowed.start}.."
                          f"{allowed.stop - 1}")
  return number


def parse_float(value: str, path: str | os.PathLike, line: int, field: str, *,
                low: float, high: float) -> float:
  try:
    number = float(value.strip())
  except ValueError:
    raise DataFormatError(path, line, f"{field} {value!r} is not a number") from None
  if not low <= number <= high:
    raise DataFormatError(path, line, f"{field} {number} is outside [{low}, {high}]")
  return number
