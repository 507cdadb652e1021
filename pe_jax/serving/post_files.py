"""Posts from a file, as `pe_jax.embed` reads them: plain text (one post a line) or JSONL (`text`, `id`).

Errors name the file, the line and what is wrong with it. What reading repairs or skips is counted in
`ReadStats` for the summary line: invalid UTF-8 is replaced (and the first place named), blank JSONL
lines are skipped. A blank line of a text file is an empty post: row i of the output is line i.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterable, Iterator

# Enough of the head of a file to tell text from something else.
_SNIFF_BYTES = 1 << 16
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclasses.dataclass
class ReadStats:
  blank: int = 0  # blank JSONL lines, skipped
  first_invalid: tuple[int, int] | None = None  # (line, byte within it) of the first invalid UTF-8

  def check(self, lineno: int, line: str) -> None:
    """Notes where the first invalid UTF-8 is (decoded with surrogateescape, each bad byte is a surrogate)."""
    if self.first_invalid is not None or line.isascii():
      return
    try:
      line.encode("utf-8")
    except UnicodeEncodeError as e:
      self.first_invalid = (lineno, len(line[:e.start].encode("utf-8", "surrogateescape")))

  def summary(self) -> str:
    parts = []
    if self.first_invalid is not None:
      parts.append("first invalid UTF-8 at line %d, byte %d" % self.first_invalid)
    if self.blank:
      parts.append(f"blank lines skipped {self.blank}")
    return "; ".join(parts)


def check_input(path: pathlib.Path) -> None:
  """Refuses, naming the line and byte, what is no file of posts: missing, empty, UTF-16 or binary."""
  if not path.exists():
    raise FileNotFoundError(f"--input {path}: no such file")
  if not path.is_file():
    raise IsADirectoryError(f"--input {path} is a folder; give a file of posts")
  with open(path, "rb") as f:
    head = f.read(_SNIFF_BYTES)
  if not head:
    raise ValueError(f"--input {path} is empty: no posts to embed")
  if head.startswith(_UTF16_BOMS):
    raise ValueError(f"{path}: line 1, byte 0: a UTF-16 byte-order mark; posts must be UTF-8 "
                     f"(iconv -f UTF-16 -t UTF-8 {path})")
  if (nul := head.find(b"\0")) >= 0:
    line, start = head.count(b"\n", 0, nul) + 1, head.rfind(b"\n", 0, nul) + 1
    raise ValueError(f"{path}: line {line}, byte {nul - start}: a NUL byte, so not a text file; posts are UTF-8 "
                     "text, one a line, or JSONL")


def parse_jsonl(lines: Iterable[str], source: object, text_field: str, id_field: str, ids: list, *,
                first_lineno: int = 1, stats: ReadStats | None = None) -> Iterator[str]:
  """Yields the texts of JSONL `lines`; fills `ids` as it goes. Errors name the source, line and field."""
  stats = stats if stats is not None else ReadStats()
  for lineno, line in enumerate(lines, first_lineno):
    if not line.strip():
      stats.blank += 1
      continue
    stats.check(lineno, line)
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      # json's messages end in " at" where it would add the position ("Invalid control character at").
      raise ValueError(f"{source}:{lineno}: not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    if not isinstance(record, dict) or text_field not in record:
      raise ValueError(f"{source}:{lineno}: no {text_field!r} field (--text_field names another)")
    if not isinstance(record[text_field], str):
      raise ValueError(f"{source}:{lineno}: field {text_field!r} is {type(record[text_field]).__name__}, not a string")
    ids.append(record.get(id_field, lineno))
    yield record[text_field]


# utf-8-sig: a byte-order mark some editors write is not part of the first post. surrogateescape keeps
# invalid UTF-8 bytes visible, so the embedder can count and replace them.
def read_jsonl(path: pathlib.Path, text_field: str, id_field: str, ids: list,
               stats: ReadStats | None = None) -> Iterator[str]:
  """Yields texts; fills `ids` as it goes. Errors name the file, line and field."""
  with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
    yield from parse_jsonl(f, path, text_field, id_field, ids, stats=stats)


def read_lines(path: pathlib.Path, stats: ReadStats | None = None) -> Iterator[str]:
  with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="\n") as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if stats is not None:
        stats.check(lineno, line)
      yield line
