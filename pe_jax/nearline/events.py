"""Post-creation events: raw broker bytes -> a `Post`, or a `Rejection` naming what was wrong.

An event is a JSON object with `id` (string or integer) and `text` (string), optionally `created_at`
(epoch seconds, or an ISO 8601 string) and `lang` (string). Anything else is rejected with a reason
code (for metrics) and a detail (for the dead-letter stream); the worker never raises on a bad event.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

DEFAULT_MAX_CHARS = 10_000  # LinkedIn caps a post at 3,000 characters; leave room, refuse the absurd


@dataclasses.dataclass(frozen=True)
class Post:
  id: str
  text: str
  created_at: float | None = None  # epoch seconds; None: the broker's enqueue time stands in
  lang: str | None = None


@dataclasses.dataclass(frozen=True)
class Rejection:
  code: str  # short and fixed: a metrics label
  detail: str

  def __str__(self) -> str:
    return f"{self.code}: {self.detail}"


def _type_name(value: object) -> str:
  return "null" if value is None else type(value).__name__


def _epoch_seconds(value: object) -> float | Rejection:
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    return Rejection("bad_created_at", f"field 'created_at' is {_type_name(value)}, not a number or ISO 8601 string")
  if isinstance(value, str):
    try:
      parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
      return Rejection("bad_created_at", f"field 'created_at' {value[:40]!r} is not ISO 8601")
    if parsed.tzinfo is None:  # a naive time is taken as UTC, never as the worker's local zone
      parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()
  if value != value or value in (float("inf"), float("-inf")):
    return Rejection("bad_created_at", f"field 'created_at' is {value}")
  return float(value)


def parse_event(body: bytes | str, *, max_chars: int = DEFAULT_MAX_CHARS) -> Post | Rejection:
  """The post an event carries, or why it cannot be embedded."""
  if isinstance(body, bytes):
    try:
      body = body.decode("utf-8")
    except UnicodeDecodeError as e:
      return Rejection("not_utf8", f"byte {e.start} is not UTF-8")
  try:
    record = json.loads(body)
  except json.JSONDecodeError as e:
    return Rejection("not_json", f"{e.msg} at line {e.lineno} column {e.colno}")
  if not isinstance(record, dict):
    return Rejection("not_object", f"a JSON {_type_name(record)}, not an object")

  if "id" not in record:
    return Rejection("no_id", "no 'id' field")
  post_id = record["id"]
  # bool is an int subclass: `true` is never a post id.
  if isinstance(post_id, bool) or not isinstance(post_id, (str, int)):
    return Rejection("bad_id", f"field 'id' is {_type_name(post_id)}, not a string or integer")
  post_id = str(post_id)
  if not post_id.strip():
    return Rejection("bad_id", "field 'id' is empty")

  if "text" not in record:
    return Rejection("no_text", f"post {post_id}: no 'text' field")
  text = record["text"]
  if not isinstance(text, str):
    return Rejection("bad_text", f"post {post_id}: field 'text' is {_type_name(text)}, not a string")
  if not text.strip():
    return Rejection("empty_text", f"post {post_id}: field 'text' is empty")
  if len(text) > max_chars:
    return Rejection("text_too_long", f"post {post_id}: text has {len(text):,} characters, over the limit {max_chars:,}")

  created_at = None
  if record.get("created_at") is not None:
    created_at = _epoch_seconds(record["created_at"])
    if isinstance(created_at, Rejection):
      return dataclasses.replace(created_at, detail=f"post {post_id}: {created_at.detail}")
  lang = record.get("lang")
  if lang is not None and not isinstance(lang, str):
    return Rejection("bad_lang", f"post {post_id}: field 'lang' is {_type_name(lang)}, not a string")
  return Post(id=post_id, text=text, created_at=created_at, lang=lang)


def encode_event(post_id: str | int, text: str, *, created_at: float | None = None, lang: str | None = None) -> bytes:
  """The JSON bytes a producer publishes (ASCII-escaped, so even a lone surrogate survives the trip)."""
  record: dict[str, object] = {"id": post_id, "text": text}
  if created_at is not None:
    record["created_at"] = created_at
  if lang is not None:
    record["lang"] = lang
  return json.dumps(record).encode("ascii")
