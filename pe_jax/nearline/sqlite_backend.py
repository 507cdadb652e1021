"""The embedded default: queue and store as SQLite tables, for one machine and no server.

Queue: a row per event. `receive` leases rows (owner, lease_until) in one write transaction; `ack`
deletes them. A consumer that dies holds its leases until they expire (`lease_s`), then the rows are
delivered again. Several workers on one machine share a queue file: the lease is taken atomically.
Store: a row per post id with a version number, the highest written so far plus one, so a reader can
ask for everything written since the version it last saw (`changes`).

WAL journal: readers never block the writer, and a kill -9 loses nothing committed.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from typing import Sequence

import numpy as np

from pe_jax.nearline.streams import (BackendURL, DeadLetter, Message, Stored, decode_vectors, default_consumer_name,
                                    upsert_vectors)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_IN_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-variable limit


def _connect(path: str) -> sqlite3.Connection:
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):  # sqlite3 would say only "unable to open database file"
    raise FileNotFoundError(f"sqlite:///{path}: no such folder {folder}")
  # Autocommit mode; transactions are explicit (BEGIN IMMEDIATE takes the write lock up front, so two
  # workers never deadlock upgrading a read to a write).
  conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
  conn.execute("PRAGMA journal_mode=WAL")
  conn.execute("PRAGMA synchronous=NORMAL")
  return conn


def _table_name(url: BackendURL, param: str, default: str) -> str:
  name = url.take(param, default)
  if not _NAME.match(name):
    raise ValueError(f"sqlite URL parameter {param}={name!r} is not a plain table name")
  return name


class _Transaction:
  """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error, under the object's thread lock."""

  def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
    self.conn, self.lock = conn, lock

  def __enter__(self) -> sqlite3.Connection:
    self.lock.acquire()
    try:
      self.conn.execute("BEGIN IMMEDIATE")
    except BaseException:
      self.lock.release()
      raise
    return self.conn

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
    finally:
      self.lock.release()


class SqliteQueue:
  def __init__(self, path: str, *, queue: str = "posts", lease_s: float = 30.0, poll_s: float = 0.01,
               consumer: str | None = None):
    self.path, self.table, self.dead_table = path, queue, f"{queue}_dead"
    self.lease_s, self.poll_s = lease_s, poll_s
    self.consumer = consumer or default_consumer_name()
    self._conn = _connect(path)
    self._lock = threading.Lock()
    with _Transaction(self._conn, self._lock) as c:
      # AUTOINCREMENT: a seq is never reused, so the late ack of a worker thought dead cannot delete a newer event.
      c.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
                " enqueued_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0, owner TEXT,"
                " deliveries INTEGER NOT NULL DEFAULT 0)")
      c.execute(f"CREATE TABLE IF NOT EXISTS {self.dead_table} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " source_id TEXT NOT NULL, body BLOB NOT NULL, reason TEXT NOT NULL, consumer TEXT, dead_at REAL)")

  def publish(self, bodies: Sequence[bytes]) -> list[str]:
    now = time.time()
    with _Transaction(self._conn, self._lock) as c:
      return [str(c.execute(f"INSERT INTO {self.table} (body, enqueued_at) VALUES (?, ?)", (b, now)).lastrowid)
              for b in bodies]

  def _lease(self, max_count: int) -> list[Message]:
    now = time.time()
    with self._lock:  # a read first: an idle poll should not take the write lock
      ready = self._conn.execute(f"SELECT EXISTS(SELECT 1 FROM {self.table} WHERE lease_until < ?)", (now,)).fetchone()
    if not ready[0]:
      return []
    with _Transaction(self._conn, self._lock) as c:
      rows = c.execute(
          f"UPDATE {self.table} SET lease_until = ?, owner = ?, deliveries = deliveries + 1 WHERE seq IN"
          f" (SELECT seq FROM {self.table} WHERE lease_until < ? ORDER BY seq LIMIT ?)"
          " RETURNING seq, body, enqueued_at, deliveries",
          (now + self.lease_s, self.consumer, now, max_count)).fetchall()
    return [Message(str(seq), bytes(body), at, n) for seq, body, at, n in sorted(rows)]

  def receive(self, max_count: int, wait_s: float) -> list[Message]:
    deadline = time.monotonic() + wait_s
    while True:
      got = self._lease(max_count)
      left = deadline - time.monotonic()
      if got or left <= 0:
        return got
      time.sleep(min(self.poll_s, left))

  def ack(self, messages: Sequence[Message]) -> None:
    with _Transaction(self._conn, self._lock) as c:
      c.executemany(f"DELETE FROM {self.table} WHERE seq = ?", [(int(m.id),) for m in messages])

  def dead_letter(self, message: Message, reason: str) -> None:
    with _Transaction(self._conn, self._lock) as c:
      c.execute(f"INSERT INTO {self.dead_table} (source_id, body, reason, consumer, dead_at) VALUES (?, ?, ?, ?, ?)",
                (message.id, message.body, reason, self.consumer, time.time()))
      c.execute(f"DELETE FROM {self.table} WHERE seq = ?", (int(message.id),))

  def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
    with self._lock:
      rows = self._conn.execute(f"SELECT source_id, body, reason FROM {self.dead_table} ORDER BY seq LIMIT ?",
                                (limit,)).fetchall()
    return [DeadLetter(s, bytes(b), r) for s, b, r in rows]

  def backlog(self) -> int:
    with self._lock:
      return self._conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

  def close(self) -> None:
    self._conn.close()


class SqliteStore:
  def __init__(self, path: str, *, table: str = "embeddings"):
    self.path, self.table = path, table
    self._conn = _connect(path)
    self._lock = threading.Lock()
    with _Transaction(self._conn, self._lock) as c:
      c.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, vector BLOB NOT NULL,"
                " stored_at REAL NOT NULL, version INTEGER NOT NULL)")
      c.execute(f"CREATE INDEX IF NOT EXISTS {table}_version ON {table} (version)")

  def upsert(self, ids: Sequence[str], vectors: np.ndarray, *, stored_at: float) -> None:
    vectors = upsert_vectors(ids, vectors, f"{self.path}:{self.table}")
    with _Transaction(self._conn, self._lock) as c:
      # The write lock is held, so versions from MAX + 1 are unique and above anything a reader has seen.
      base = c.execute(f"SELECT COALESCE(MAX(version), 0) FROM {self.table}").fetchone()[0]
      c.executemany(
          f"INSERT INTO {self.table} (id, vector, stored_at, version) VALUES (?, ?, ?, ?)"
          " ON CONFLICT(id) DO UPDATE SET vector = excluded.vector, stored_at = excluded.stored_at,"
          " version = excluded.version WHERE vector IS NOT excluded.vector",
          [(i, v.tobytes(), stored_at, base + n) for n, (i, v) in enumerate(zip(ids, vectors), 1)])

  def fetch(self, ids: Sequence[str]) -> dict[str, Stored]:
    out = {}
    with self._lock:
      for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start:start + _IN_CHUNK])
        rows = self._conn.execute(f"SELECT id, vector, stored_at FROM {self.table} WHERE id IN"
                                  f" ({','.join('?' * len(chunk))})", chunk).fetchall()
        for i, blob, at in rows:
          out[i] = Stored(np.frombuffer(blob, np.float32), at)
    return out

  def changes(self, after: int, limit: int = 10_000) -> tuple[list[str], np.ndarray, int]:
    with self._lock:
      rows = self._conn.execute(f"SELECT id, vector, version FROM {self.table} WHERE version > ?"
                                " ORDER BY version LIMIT ?", (after, limit)).fetchall()
    if not rows:
      return [], np.zeros((0, 0), np.float32), after
    return [r[0] for r in rows], decode_vectors([r[1] for r in rows], f"{self.path}:{self.table}"), rows[-1][2]

  def count(self) -> int:
    with self._lock:
      return self._conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

  def close(self) -> None:
    self._conn.close()


def open_queue(url: BackendURL, *, consumer: str | None = None) -> SqliteQueue:
  options = dict(queue=_table_name(url, "queue", "posts"), lease_s=url.take("lease_s", 30.0, float),
                 poll_s=url.take("poll_s", 0.01, float))
  url.check_used("queue")
  return SqliteQueue(url.path, consumer=consumer, **options)


def open_store(url: BackendURL) -> SqliteStore:
  table = _table_name(url, "table", "embeddings")
  url.check_used("store")
  return SqliteStore(url.path, table=table)
