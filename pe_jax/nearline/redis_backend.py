"""Redis Streams as the broker, Redis hashes as the store.

Queue: one stream, one consumer group; every worker is a consumer of the group. A message read is
pending for its consumer until XACK. A worker that restarts under the same name reads its own pending
messages first; pending messages idle longer than `claim_idle_s` (their consumer died, or is stuck)
are taken over with XAUTOCLAIM. Dead letters go to a second stream with the reason, in the same
MULTI as the XACK. Acknowledged entries stay in the stream unless the producer trims it
(`maxlen`: keep it far above any backlog, since trimming does not wait for acknowledgement).

Store: `PREFIX:vectors` (id -> float32 bytes), `PREFIX:stored_at` (id -> epoch seconds) and
`PREFIX:versions`, a sorted set of ids scored by the version of their last change, from the counter
`PREFIX:version`. One Lua script writes a whole batch atomically and skips unchanged vectors.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pe_jax.nearline.streams import (BackendURL, DeadLetter, Message, Stored, decode_vectors, default_consumer_name,
                                    upsert_vectors)

_FIELD = b"data"  # the stream entry field holding the event's JSON
CONNECT_ATTEMPTS = 5  # PINGs before giving up at start-up: 0.5 + 1 + 2 + 4 s of waiting

_UPSERT = """
local changed = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
    redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[3]), ARGV[i])
    changed = changed + 1
  end
end
return changed
"""


def _client(url: BackendURL, attempts: int) -> redis.Redis:
  """A client whose server answered PING, asked `attempts` times with backoff: a worker often starts
  alongside its broker, but a wrong URL should fail in seconds, saying so."""
  try:
    db = int(url.path or 0)
  except ValueError:
    raise ValueError(f"redis URL: database {url.path!r} is not a number") from None
  # A timeout, so a hung server surfaces as an error the worker backs off from, not a silent hang.
  client = redis.Redis(host=url.host, port=url.port or 6379, db=db, socket_timeout=30, socket_connect_timeout=5)
  retry = client.get_retry()
  client.set_retry(Retry(NoBackoff(), 0))  # the client's own retries would multiply the attempts here
  delay, start = 0.5, time.monotonic()
  for attempt in range(1, attempts + 1):
    try:
      client.ping()
      client.set_retry(retry)
      return client
    except redis.ConnectionError as e:
      if attempt == attempts:
        client.close()
        raise ConnectionError(
            f"redis://{url.host}:{url.port or 6379}/{db}: no Redis server answered ({attempts} attempts in "
            f"{time.monotonic() - start:.1f} s; {e}). Start redis-server there, or install it: "
            "sudo apt-get install redis-server (or bash scripts/install.sh --with-redis)") from None
      time.sleep(delay)
      delay *= 2


def _entry_time(entry_id: str) -> float:
  return int(entry_id.split("-", 1)[0]) / 1000  # a stream id starts with its epoch milliseconds


class RedisQueue:
  def __init__(self, client: redis.Redis, *, stream: str = "posts", group: str = "embedder", dead: str | None = None,
               claim_idle_s: float = 30.0, maxlen: int = 0, consumer: str | None = None):
    self.client, self.stream, self.group = client, stream, group
    self.dead = dead or f"{stream}:dead"
    self.claim_idle_ms = int(claim_idle_s * 1000)
    self.maxlen = maxlen or None
    self.consumer = consumer or default_consumer_name()
    self._history: str | None = "0"  # where this consumer's own pending messages continue; None: all read
    self._next_claim = 0.0
    try:
      # From id 0: events published before the group existed are consumed too.
      client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
      if "BUSYGROUP" not in str(e):
        raise

  def publish(self, bodies: Sequence[bytes]) -> list[str]:
    pipe = self.client.pipeline(transaction=False)
    for body in bodies:
      pipe.xadd(self.stream, {_FIELD: body}, maxlen=self.maxlen, approximate=True)
    return [i.decode() for i in pipe.execute()]

  def _messages(self, entries, deliveries: dict[str, int] | None = None) -> list[Message]:
    out = []
    for raw_id, fields in entries:
      entry_id = raw_id.decode()
      # An entry without the field (someone else's XADD) still becomes a message: the worker dead-letters it.
      body = fields.get(_FIELD, b"") if fields else b""
      out.append(Message(entry_id, body, _entry_time(entry_id), (deliveries or {}).get(entry_id, 1)))
    return out

  def _delivery_counts(self, entries) -> dict[str, int]:
    if not entries:
      return {}
    first, last = entries[0][0], entries[-1][0]
    pending = self.client.xpending_range(self.stream, self.group, min=first, max=last, count=len(entries),
                                         consumername=self.consumer)
    return {p["message_id"].decode(): p["times_delivered"] for p in pending}

  def _own_pending(self, max_count: int) -> list[Message]:
    reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: self._history}, count=max_count)
    entries = [e for e in (reply[0][1] if reply else []) if e[1]]  # deleted entries come back without fields
    if not entries:
      self._history = None
      return []
    self._history = entries[-1][0].decode()
    return self._messages(entries, self._delivery_counts(entries))

  def _claim(self, max_count: int) -> list[Message]:
    if time.monotonic() < self._next_claim:
      return []
    # The whole pending list, a page at a time; then wait a fraction of the idle time before looking again.
    cursor, entries = "0-0", []
    while len(entries) < max_count:
      cursor, claimed, *_ = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                                   start_id=cursor, count=max_count - len(entries))
      entries += [e for e in claimed if e[1]]
      if cursor in (b"0-0", "0-0"):
        self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
        break
    return self._messages(entries, self._delivery_counts(entries))

  def receive(self, max_count: int, wait_s: float) -> list[Message]:
    if self._history is not None:
      # All of it before any new message: a new message read now would be pending too, and read twice.
      got = self._own_pending(max_count)
      if got:
        return got
    got = self._claim(max_count)
    if len(got) < max_count:
      block = None if got else max(1, int(wait_s * 1000))
      reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=max_count - len(got),
                                     block=block)
      got += self._messages(reply[0][1] if reply else [])
    return got

  def ack(self, messages: Sequence[Message]) -> None:
    if messages:
      self.client.xack(self.stream, self.group, *[m.id for m in messages])

  def dead_letter(self, message: Message, reason: str) -> None:
    pipe = self.client.pipeline(transaction=True)
    pipe.xadd(self.dead, {_FIELD: message.body, b"reason": reason.encode(), b"source_id": message.id.encode(),
                          b"consumer": self.consumer.encode()})
    pipe.xack(self.stream, self.group, message.id)
    pipe.execute()

  def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
    return [DeadLetter(f[b"source_id"].decode(), f[b"data"], f[b"reason"].decode())
            for _, f in self.client.xrange(self.dead, count=limit)]

  def backlog(self) -> int:
    for g in self.client.xinfo_groups(self.stream):
      if g["name"].decode() == self.group:
        # lag is unknown (None) after entries were deleted mid-stream: the stream length bounds it.
        lag = g.get("lag")
        return g["pending"] + (lag if lag is not None else self.client.xlen(self.stream))
    raise RuntimeError(f"redis stream {self.stream!r} has no consumer group {self.group!r} (deleted while running?)")

  def close(self) -> None:
    self.client.close()


class RedisStore:
  def __init__(self, client: redis.Redis, *, prefix: str = "embeddings"):
    self.client, self.prefix = client, prefix
    self._keys = [f"{prefix}:vectors", f"{prefix}:stored_at", f"{prefix}:version", f"{prefix}:versions"]
    self._upsert = client.register_script(_UPSERT)

  def upsert(self, ids: Sequence[str], vectors: np.ndarray, *, stored_at: float) -> None:
    vectors = upsert_vectors(ids, vectors, f"redis {self.prefix}")
    args: list[object] = [repr(stored_at)]
    for post_id, vector in zip(ids, vectors):
      args += [post_id, vector.tobytes()]
    self._upsert(keys=self._keys, args=args)

  def fetch(self, ids: Sequence[str]) -> dict[str, Stored]:
    if not ids:
      return {}
    pipe = self.client.pipeline(transaction=True)
    pipe.hmget(self._keys[0], list(ids))
    pipe.hmget(self._keys[1], list(ids))
    blobs, times = pipe.execute()
    return {i: Stored(np.frombuffer(b, np.float32), float(t)) for i, b, t in zip(ids, blobs, times) if b is not None}

  def changes(self, after: int, limit: int = 10_000) -> tuple[list[str], np.ndarray, int]:
    scored = self.client.zrangebyscore(self._keys[3], f"({after}", "+inf", start=0, num=limit, withscores=True)
    if not scored:
      return [], np.zeros((0, 0), np.float32), after
    ids = [i.decode() for i, _ in scored]
    # A newer write between the two reads hands out its vector early; its version brings it again next time.
    blobs = self.client.hmget(self._keys[0], ids)
    return ids, decode_vectors(blobs, f"redis {self.prefix}"), int(scored[-1][1])

  def count(self) -> int:
    return self.client.hlen(self._keys[0])

  def close(self) -> None:
    self.client.close()


def open_queue(url: BackendURL, *, consumer: str | None = None) -> RedisQueue:
  options = dict(stream=url.take("stream", "posts"), group=url.take("group", "embedder"), dead=url.take("dead", None),
                 claim_idle_s=url.take("claim_idle_s", 30.0, float), maxlen=url.take("maxlen", 0, int))
  attempts = url.take("connect_attempts", CONNECT_ATTEMPTS, int)
  url.check_used("queue")
  return RedisQueue(_client(url, attempts), consumer=consumer, **options)


def open_store(url: BackendURL) -> RedisStore:
  prefix = url.take("prefix", "embeddings")
  attempts = url.take("connect_attempts", CONNECT_ATTEMPTS, int)
  url.check_used("store")
  return RedisStore(_client(url, attempts), prefix=prefix)
