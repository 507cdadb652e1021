"""The near-line loop: receive a micro-batch, embed it, upsert the vectors, and only then acknowledge.

A crash anywhere before the acknowledgement leaves the events with the broker, which delivers them
again; the store is keyed by post id, so the second write changes nothing. At least once delivery,
exactly once effect. Bad events go to the dead letters with their reason and the loop goes on; a
failing store or broker is retried with exponential backoff for as long as it takes, never skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Sequence

import numpy as np

from pe_jax.nearline.events import DEFAULT_MAX_CHARS, Post, Rejection, parse_event
from pe_jax.nearline.metrics import Metrics
from pe_jax.nearline.streams import Message, Queue, Store

log = logging.getLogger(__name__)

EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
  batch_size: int = 256  # events per micro-batch at most
  max_wait_s: float = 0.1  # how long the first event of a batch waits for others to join it
  idle_wait_s: float = 1.0  # one blocking receive when nothing is there (then metrics and the stop flag)
  max_chars: int = DEFAULT_MAX_CHARS
  max_deliveries: int = 5  # delivered this often without an acknowledgement: poison, dead-lettered
  retry_initial_s: float = 0.1
  retry_max_s: float = 10.0
  report_every_s: float = 10.0
  metrics_file: str | None = None


class _Stopped(Exception):
  """Stop was requested while a backend kept failing: the batch is left unacknowledged, for redelivery."""


class Worker:
  def __init__(self, embed: EmbedFn, queue: Queue, store: Store, config: WorkerConfig = WorkerConfig(),
               metrics: Metrics | None = None):
    self.embed, self.queue, self.store, self.config = embed, queue, store, config
    self.metrics = metrics or Metrics()
    self._stop = threading.Event()
    self._next_report = 0.0

  def stop(self) -> None:
    """Finish the batch in hand, then return from `run` (a signal handler may call this)."""
    self._stop.set()

  def run(self) -> None:
    log.info("nearline worker running (batch %d events, wait %.0f ms)", self.config.batch_size,
             self.config.max_wait_s * 1000)
    try:
      while not self._stop.is_set():
        self.step()
        self._report()
    except _Stopped as e:
      log.warning("%s", e)
    self._report(force=True)
    log.info("nearline worker stopped")

  def step(self) -> int:
    """One micro-batch, start to acknowledgement; the number of messages it held."""
    batch = self._collect()
    if batch:
      self._process(batch)
    return len(batch)

  def _retry(self, what: str, fn: Callable[[], object], *, holding: int, counter: str = "broker_retries") -> object:
    delay, attempt = self.config.retry_initial_s, 0
    while True:
      try:
        return fn()
      except Exception as e:  # noqa: BLE001 - any backend failure is retried, never turned into a lost event
        attempt += 1
        self.metrics.add(**{counter: 1})
        if self._stop.is_set():
          raise _Stopped(f"{what} failed while stopping ({type(e).__name__}: {e}); {holding} events left "
                         "unacknowledged, the broker delivers them again") from e
        log.warning("%s failed (attempt %d: %s: %s); retrying in %.1f s", what, attempt, type(e).__name__, e, delay)
        self._stop.wait(delay)
        delay = min(delay * 2, self.config.retry_max_s)

  def _collect(self) -> list[Message]:
    cfg, batch, deadline = self.config, [], None
    while len(batch) < cfg.batch_size and not self._stop.is_set():
      wait = cfg.idle_wait_s if deadline is None else deadline - time.monotonic()
      if wait <= 0:
        break
      got = self._retry("receive", lambda: self.queue.receive(cfg.batch_size - len(batch), wait), holding=len(batch))
      if not got and deadline is None:
        break  # idle: back to the loop, to report and to look at the stop flag
      if got and deadline is None:
        deadline = time.monotonic() + cfg.max_wait_s
      batch += got
    # A lease shorter than the batch wait hands the same message out twice: keep its latest delivery.
    return list({m.id: m for m in batch}.values())

  def _process(self, batch: list[Message]) -> None:
    cfg = self.config
    self.metrics.add(received=len(batch), batches=1, redelivered=sum(m.deliveries > 1 for m in batch))
    good: list[tuple[Message, Post]] = []
    for message in batch:
      if message.deliveries > cfg.max_deliveries:
        parsed = Rejection("poison", f"delivered {message.deliveries} times without an acknowledgement")
      else:
        parsed = parse_event(message.body, max_chars=cfg.max_chars)
      if isinstance(parsed, Rejection):
        self._retry("dead-letter", lambda m=message, r=str(parsed): self.queue.dead_letter(m, r), holding=len(batch))
        self.metrics.dead_letter(parsed.code)
        log.info("dead-lettered message %s: %s", message.id, parsed)
      else:
        good.append((message, parsed))
    if not good:
      return
    # One post twice in a batch (an edit): the later event wins; both are acknowledged.
    latest = {post.id: (message, post) for message, post in good}
    ids = list(latest)
    vectors = self.embed([post.text for _, post in latest.values()])
    self._retry("store upsert", lambda: self.store.upsert(ids, vectors, stored_at=time.time()), holding=len(good),
                counter="store_retries")
    stored_at = time.time()
    self._retry("ack", lambda: self.queue.ack([m for m, _ in good]), holding=len(good))
    self.metrics.add(acked=len(good))
    self.metrics.stored([stored_at - (message.enqueued_at if post.created_at is None else post.created_at)
                         for message, post in latest.values()])

  def _report(self, force: bool = False) -> None:
    now = time.monotonic()
    if not force and now < self._next_report:
      return
    self._next_report = now + self.config.report_every_s
    try:
      self.metrics.backlog = self.queue.backlog()
    except Exception as e:  # noqa: BLE001 - an unreachable broker must not stop the report that says so
      log.warning("backlog unknown: %s: %s", type(e).__name__, e)
      self.metrics.backlog = None
    snap = self.metrics.snapshot()
    log.info("%s", self.metrics.log_line(snap))
    if self.config.metrics_file:
      self.metrics.write_json(self.config.metrics_file, snap)
