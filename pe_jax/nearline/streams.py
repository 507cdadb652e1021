"""The small interface between the worker and its backends: a `Queue` of events and a `Store` of embeddings.

Backends are named by URL:

  redis://HOST:PORT/DB?stream=posts&group=embedder&claim_idle_s=30   a Redis Stream and consumer group
  redis://HOST:PORT/DB?prefix=embeddings                             a Redis store
  (either: &connect_attempts=5, the PINGs at start-up before an absent server is an error)
  sqlite:///relative/path.db?queue=posts&lease_s=30                  a SQLite queue table (one machine)
  sqlite:////absolute/path.db?table=embeddings                       a SQLite store

(SQLite paths follow SQLAlchemy: three slashes then the path, so an absolute path shows four.)

Delivery is at least once: a received message stays owned by its consumer until acknowledged, and
when that consumer dies (no ack within `claim_idle_s` / `lease_s`) another consumer gets it again.
The store is keyed by post id, so storing a redelivered post again changes nothing.

Room for Kafka: `receive` maps to poll, `ack` to committing the highest contiguous offset of each
partition, `dead_letter` to producing on a dead-letter topic; a "kafka" entry in `_BACKENDS` is all
the worker needs.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import urllib.parse
from typing import Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Message:
  id: str  # the broker's id: a Redis stream entry id, a SQLite row id
  body: bytes
  enqueued_at: float  # epoch seconds, from the broker
  deliveries: int = 1  # > 1: a redelivery (its consumer died or was too slow)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
  source_id: str
  body: bytes
  reason: str


class Queue(Protocol):
  def publish(self, bodies: Sequence[bytes]) -> list[str]:
    """Appends events; returns their message ids."""

  def receive(self, max_count: int, wait_s: float) -> list[Message]:
    """Up to `max_count` messages, redeliveries of dead consumers' messages first; waits at most `wait_s`
    for the first one."""

  def ack(self, messages: Sequence[Message]) -> None:
    """Done with these: they are never delivered again."""

  def dead_letter(self, message: Message, reason: str) -> None:
    """Moves one message to the dead letters with the reason, and acknowledges it, in one step."""

  def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
    """The oldest dead letters, for a person (or a test) to read."""

  def backlog(self) -> int:
    """Messages not yet acknowledged: never delivered, or delivered and in flight."""

  def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Stored:
  vector: np.ndarray  # float32 [D]
  stored_at: float  # epoch seconds of the write that last changed it


class Store(Protocol):
  def upsert(self, ids: Sequence[str], vectors: np.ndarray, *, stored_at: float) -> None:
    """One row per id, atomically for the whole call; writing an identical vector again changes nothing."""

  def fetch(self, ids: Sequence[str]) -> dict[str, Stored]:
    """The stored rows of those ids that have one."""

  def changes(self, after: int, limit: int = 10_000) -> tuple[list[str], np.ndarray, int]:
    """Ids and vectors written since version `after` (each id once, latest vector), and the version to pass
    next time. Version 0 is the empty store."""

  def count(self) -> int: ...

  def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class BackendURL:
  scheme: str
  host: str | None
  port: int | None
  path: str  # Redis: the database number ("" for 0); SQLite: the file
  params: dict[str, str]

  def take(self, name: str, default, cast=str):
    """A query parameter, cast; removes it so `check_used` can report the ones nobody read."""
    if name not in self.params:
      return default
    raw = self.params.pop(name)
    try:
      return cast(raw)
    except ValueError:
      raise ValueError(f"{self.scheme} URL parameter {name}={raw!r} is not a valid {cast.__name__}") from None

  def check_used(self, role: str) -> None:
    if self.params:
      raise ValueError(f"{self.scheme} {role} URL: unknown parameter(s) {', '.join(sorted(self.params))}")


def parse_url(url: str) -> BackendURL:
  parts = urllib.parse.urlsplit(url)
  if parts.scheme not in _BACKENDS:
    raise ValueError(f"{url!r}: unknown backend {parts.scheme!r}; known: {', '.join(sorted(_BACKENDS))}")
  query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
  repeated = [k for k, v in query.items() if len(v) > 1]
  if repeated:
    raise ValueError(f"{url!r}: parameter(s) given twice: {', '.join(repeated)}")
  params = {k: v[0] for k, v in query.items()}
  if parts.scheme == "sqlite":
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
      raise ValueError(f"{url!r}: a SQLite URL is sqlite:///relative.db or sqlite:////absolute.db")
    return BackendURL("sqlite", None, None, parts.path[1:], params)
  return BackendURL(parts.scheme, parts.hostname or "localhost", parts.port, parts.path.lstrip("/"), params)


# scheme -> module with open_queue(BackendURL, consumer) and open_store(BackendURL); imported on use, so
# the SQLite default needs no Redis client installed.
_BACKENDS = {"redis": "pe_jax.nearline.redis_backend", "sqlite": "pe_jax.nearline.sqlite_backend"}


def _backend(scheme: str):
  try:
    return importlib.import_module(_BACKENDS[scheme])
  except ModuleNotFoundError as e:  # the backend's client library (redis) is not installed
    raise ModuleNotFoundError(f"the {scheme} backend needs the Python package {e.name!r}: pip install {e.name}") from e


def open_queue(url: str, *, consumer: str | None = None) -> Queue:
  """The queue a URL names; `consumer` names this worker within its group (default: host and pid)."""
  parsed = parse_url(url)
  return _backend(parsed.scheme).open_queue(parsed, consumer=consumer)


def open_store(url: str) -> Store:
  parsed = parse_url(url)
  return _backend(parsed.scheme).open_store(parsed)


def default_consumer_name() -> str:
  return f"{socket.gethostname()}-{os.getpid()}"


def upsert_vectors(ids: Sequence[str], vectors: np.ndarray, where: str) -> np.ndarray:
  """Contiguous float32 rows (so `tobytes` is the row), one per id: what every store writes."""
  vectors = np.ascontiguousarray(vectors, np.float32)
  if len(ids) != len(vectors):
    raise ValueError(f"upsert into {where}: {len(ids)} ids but {len(vectors)} vectors")
  return vectors


def decode_vectors(blobs: Sequence[bytes], where: str) -> np.ndarray:
  """float32 rows from stored bytes; rows of another width mean two models wrote to one store."""
  if not blobs:
    return np.zeros((0, 0), np.float32)
  widths = {len(b) for b in blobs}
  if len(widths) > 1:
    raise ValueError(f"{where}: stored vectors have {len(widths)} different widths (bytes: {sorted(widths)}); "
                     "was the store written by two models? Give each model its own store.")
  return np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), -1)
