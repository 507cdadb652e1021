"""Crash safety with real processes: `python -m pe_jax.nearline` workers killed with SIGKILL mid-stream of
5,000 posts, on a real redis-server and on SQLite. Every post must end up stored once, with its embedding."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from pe_jax.nearline.events import encode_event
from pe_jax.nearline.streams import open_queue, open_store

pytestmark = pytest.mark.slow  # real worker processes over 5,000 posts: ~20 s each on a quiet CPU

REPO = pathlib.Path(__file__).resolve().parents[2]
WORDS = "the a of and to is in it hello world post job team data model great news today we are hiring".split()
N = 5000


def stream_of_posts(n: int = N) -> dict[str, str]:
  rng = random.Random(7)  # up to 30 words: some run past the tiny model's 24 tokens and are truncated
  return {f"post-{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 30))) for i in range(n)}


class WorkerProcess:
  """One worker subprocess, its log and metrics file in `folder`."""

  def __init__(self, folder: pathlib.Path, name: str, model: pathlib.Path, source: str, store: str, *extra: str):
    self.name, self.log, self.metrics_file = name, folder / f"{name}.log", folder / f"{name}.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PE_JAX_COMPILATION_CACHE": str(folder.parent / "xla")}
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "pe_jax.nearline", "--model", str(model), "--source", source, "--store", store,
         "--consumer", name, "--embed_batch", "8", "--max_wait_ms", "20", "--report_every_s", "0.2",
         "--metrics_file", str(self.metrics_file), *extra],
        cwd=REPO, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

  def metrics(self) -> dict:
    try:
      return json.loads(self.metrics_file.read_text())
    except FileNotFoundError:
      return {}

  def wait_ready(self, wait_for) -> None:
    wait_for(lambda: self.metrics().get("ready") or self._died(), 120, f"worker {self.name} to warm up")

  def _died(self) -> None:
    if self.proc.poll() is not None:
      pytest.fail(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

  def kill_if_holding(self, held) -> int:
    """SIGKILL if the worker holds unacknowledged events (`held()` > 0, checked while it is stopped); else 0."""
    self.proc.send_signal(signal.SIGSTOP)
    holding = held()
    if holding:
      self.proc.kill()
      self.proc.wait(10)
    else:
      self.proc.send_signal(signal.SIGCONT)
    return holding

  def terminate(self) -> None:
    """SIGTERM: it finishes the batch in hand and exits 0."""
    self.proc.send_signal(signal.SIGTERM)
    assert self.proc.wait(30) == 0, self.log.read_text()[-3000:]
    assert "nearline worker stopped" in self.log.read_text()

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait(10)


def publish_until_killed(queue, bodies: list[bytes], worker: WorkerProcess, held, store) -> int:
  """Publishes a chunk at a time, and kills `worker` the first time it holds events after 500 posts were stored;
  then publishes the rest: the stream goes on after the crash. Returns how many events the worker held.

  Publishing can outrun the workers (all posts queued before 500 are stored): the looks go on while they
  work through the backlog."""
  published = 0
  while published < len(bodies) or store.count() < len(bodies):
    if published < len(bodies):
      queue.publish(bodies[published:published + 100])
      published += 100
    time.sleep(0.01)
    if store.count() >= 500:
      # A worker holds events only between taking a batch and acknowledging it: look several times per
      # round, or a fast worker (or one its peer outpaces) slips through every single look.
      for _ in range(20):
        holding = worker.kill_if_holding(held)
        if holding:
          queue.publish(bodies[published:])
          return holding
        time.sleep(0.005)
  pytest.fail(f"worker {worker.name} was never caught holding events")


def assert_each_post_stored_once_with_its_embedding(store, posts: dict[str, str], embedder) -> None:
  assert store.count() == len(posts)
  got = store.fetch(list(posts))
  missing = sorted(set(posts) - set(got))
  assert not missing, f"{len(missing)} posts lost, e.g. {missing[:5]}"
  np.testing.assert_allclose(np.stack([got[i].vector for i in posts]), embedder.embed(list(posts.values())), atol=1e-5)


def test_redis_a_second_worker_claims_what_a_killed_worker_held(tmp_path, redis_port, tiny_bert_dir, tiny_embedder,
                                                                 wait_for):
  import redis

  base = f"redis://127.0.0.1:{redis_port}/0"
  source, store_url = f"{base}?stream=crash&group=g&claim_idle_s=1", f"{base}?prefix=crash"
  queue, store, client = open_queue(source, consumer="producer"), open_store(store_url), redis.Redis(port=redis_port)
  posts = stream_of_posts()
  bodies = [encode_event(i, t, created_at=time.time()) for i, t in posts.items()]
  workers = [WorkerProcess(tmp_path, name, tiny_bert_dir, source, store_url, "--batch_size", "50") for name in "ab"]
  try:
    for w in workers:
      w.wait_ready(wait_for)
    a, b = workers
    pending_a = lambda: client.xpending_range("crash", "g", "-", "+", 1000, consumername="a")
    held = len(publish_until_killed(queue, bodies, a, pending_a, store))
    wait_for(lambda: store.count() == N and queue.backlog() == 0, 60, f"all {N} posts stored, the backlog empty")
    assert pending_a() == []  # b took over everything a held
    b.terminate()
    assert b.metrics()["counts"]["redelivered"] >= held > 0
  finally:
    for w in workers:
      w.stop()
  assert_each_post_stored_once_with_its_embedding(store, posts, tiny_embedder)
  assert client.zcard("crash:versions") == N and queue.dead_letters() == []


def test_sqlite_a_restarted_worker_takes_over_expired_leases_and_sigterm_drains(tmp_path, tiny_bert_dir, tiny_embedder,
                                                                                wait_for):
  db = tmp_path / "nearline.db"
  source = store_url = f"sqlite:///{db}"
  queue, store = open_queue(f"{source}?lease_s=1"), open_store(store_url)
  posts = stream_of_posts()
  bodies = [encode_event(i, t) for i, t in posts.items()]
  leased = lambda owner: sqlite3.connect(db).execute(
      "SELECT COUNT(*) FROM posts WHERE owner = ? AND lease_until > ?", (owner, time.time())).fetchone()[0]
  workers = []
  try:
    w1 = WorkerProcess(tmp_path, "w1", tiny_bert_dir, f"{source}?lease_s=1", store_url, "--batch_size", "20")
    workers.append(w1)
    w1.wait_ready(wait_for)
    publish_until_killed(queue, bodies, w1, lambda: leased("w1"), store)

    w2 = WorkerProcess(tmp_path, "w2", tiny_bert_dir, f"{source}?lease_s=1", store_url, "--batch_size", "20")
    workers.append(w2)
    w2.wait_ready(wait_for)
    start = store.count()
    wait_for(lambda: store.count() >= start + 200, 60, "w2 to store 200 more posts")
    w2.terminate()  # mid-stream
    assert leased("w2") == 0  # it finished and acknowledged the batch in hand
    assert 0 < queue.backlog() and store.count() + queue.backlog() >= N

    w3 = WorkerProcess(tmp_path, "w3", tiny_bert_dir, f"{source}?lease_s=1", store_url, "--batch_size", "200")
    workers.append(w3)
    wait_for(lambda: store.count() == N and queue.backlog() == 0, 90, f"all {N} posts stored, the queue empty")
    w3.terminate()
  finally:
    for w in workers:
      w.stop()
  assert_each_post_stored_once_with_its_embedding(store, posts, tiny_embedder)
  assert queue.dead_letters() == []
