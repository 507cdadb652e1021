"""The worker in-process on both backends: right vectors, dead letters with reasons, retries, drain, freshness."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import urllib.request

import numpy as np

from pe_jax.nearline.events import encode_event
from pe_jax.nearline.live_index import LiveIndex
from pe_jax.nearline.streams import open_queue, open_store
from pe_jax.nearline.worker import Worker, WorkerConfig

WORDS = "the a of and to is in it hello world post job team data model great news today we are hiring".split()
FAST = WorkerConfig(batch_size=16, max_wait_s=0.02, idle_wait_s=0.05, retry_initial_s=0.01, retry_max_s=0.05,
                    report_every_s=0.1)


def posts(n: int, seed: int = 0) -> dict[str, str]:
  rng = random.Random(seed)
  return {f"p{seed}-{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 30))) for i in range(n)}


class Running:
  """A worker on a thread, stopped and joined on exit."""

  def __init__(self, worker: Worker):
    self.worker = worker
    self.thread = threading.Thread(target=worker.run)

  def __enter__(self) -> Worker:
    self.thread.start()
    return self.worker

  def __exit__(self, *exc) -> None:
    self.worker.stop()
    self.thread.join(30)
    assert not self.thread.is_alive(), "worker did not stop"


def assert_stored(store, expected: dict[str, str], embedder) -> None:
  got = store.fetch(list(expected))
  assert sorted(got) == sorted(expected) and store.count() == len(expected)
  want = embedder.embed(list(expected.values()))
  np.testing.assert_allclose(np.stack([got[i].vector for i in expected]), want, atol=1e-5)


def test_every_post_is_stored_with_its_embedding_and_bad_events_are_dead_lettered(backend, make_urls, tiny_embedder,
                                                                                  wait_for, tmp_path):
  queue_url, store_url = make_urls(backend)
  queue, store = open_queue(queue_url), open_store(store_url)
  good = posts(50)
  bad = {b"{not json": "not_json", b'{"text": "no id"}': "no_id", b'{"id": "x1"}': "no_text",
         encode_event("x2", "word " * 3000): "text_too_long", b'{"id": "x3", "text": 5}': "bad_text",
         b'{"id": [1], "text": "a"}': "bad_id"}
  bodies = [encode_event(i, t, created_at=time.time()) for i, t in good.items()]
  bodies[10:10] = list(bad)  # in the middle of the stream: the worker goes on past them
  queue.publish(bodies)
  metrics_file = tmp_path / "metrics.json"
  worker = Worker(tiny_embedder.embed, queue, store, dataclasses.replace(FAST, metrics_file=str(metrics_file)))
  with Running(worker):
    wait_for(lambda: queue.backlog() == 0, 30, "the backlog to drain")
  assert_stored(store, good, tiny_embedder)
  letters = queue.dead_letters()
  assert sorted(l.body for l in letters) == sorted(bad)
  assert {l.body: l.reason.split(":")[0] for l in letters} == bad
  snap = json.loads(metrics_file.read_text())
  assert snap["counts"]["stored"] == 50 and snap["counts"]["acked"] == 50 and snap["backlog"] == 0
  assert snap["dead_letters"] == {code: 1 for code in bad.values()}
  assert 0 <= snap["latency_s"]["p50"] <= snap["latency_s"]["p99"] < 30


def test_the_last_event_of_a_post_wins_and_a_replay_changes_nothing(backend, make_urls, tiny_embedder, wait_for):
  queue_url, store_url = make_urls(backend)
  queue, store = open_queue(queue_url), open_store(store_url)
  queue.publish([encode_event("p", "first version"), encode_event("p", "hello world post")])
  worker = Worker(tiny_embedder.embed, queue, store, FAST)
  assert worker.step() == 2
  assert_stored(store, {"p": "hello world post"}, tiny_embedder)
  before = store.fetch(["p"])["p"]
  _, _, version = store.changes(0)
  queue.publish([encode_event("p", "hello world post")])  # the same event again, as after a crash
  assert worker.step() == 1
  after = store.fetch(["p"])["p"]
  assert after.stored_at == before.stored_at and np.array_equal(after.vector, before.vector)
  assert store.changes(version)[0] == [] and queue.backlog() == 0


class Flaky:
  """`target` whose `method` fails the first `failures` calls, as a backend that is down for a while."""

  def __init__(self, target, method: str, failures: int):
    self.target, self.method, self.failures, self.calls = target, method, failures, 0

  def __getattr__(self, name):
    attr = getattr(self.target, name)
    if name != self.method:
      return attr

    def flaky(*args, **kwargs):
      self.calls += 1
      if self.calls <= self.failures:
        raise ConnectionError(f"{name} down (call {self.calls})")
      return attr(*args, **kwargs)

    return flaky


def test_an_unavailable_store_is_retried_with_backoff_and_nothing_is_lost(backend, make_urls, tiny_embedder):
  queue_url, store_url = make_urls(backend)
  queue, store = open_queue(queue_url), Flaky(open_store(store_url), "upsert", failures=4)
  good = posts(10, seed=1)
  queue.publish([encode_event(i, t) for i, t in good.items()])
  worker = Worker(tiny_embedder.embed, queue, store, FAST)
  start = time.monotonic()
  assert worker.step() == 10
  assert time.monotonic() - start >= 0.01 + 0.02 + 0.04 + 0.05  # backed off: 10, 20, 40, then capped 50 ms
  assert worker.metrics.counts["store_retries"] == 4 and store.calls == 5
  assert_stored(store, good, tiny_embedder)
  assert queue.backlog() == 0


def test_an_unavailable_broker_is_retried_too(backend, make_urls, tiny_embedder):
  queue_url, store_url = make_urls(backend)
  queue = Flaky(open_queue(queue_url), "receive", failures=3)
  good = posts(5, seed=3)
  queue.publish([encode_event(i, t) for i, t in good.items()])
  worker = Worker(tiny_embedder.embed, queue, open_store(store_url), FAST)
  assert worker.step() == 5
  assert worker.metrics.counts["broker_retries"] == 3
  assert_stored(worker.store, good, tiny_embedder)


def test_stopping_while_the_store_is_down_leaves_the_batch_for_redelivery(make_urls, tiny_embedder, tmp_path):
  queue_url, store_url = make_urls(f"sqlite:///{tmp_path / 'q.db'}", lease_s=0.2)
  queue, store = open_queue(queue_url), Flaky(open_store(store_url), "upsert", failures=10**9)
  queue.publish([encode_event(1, "hello"), encode_event(2, "world")])
  worker = Worker(tiny_embedder.embed, queue, store, FAST)
  with Running(worker):
    time.sleep(0.3)  # retrying by now
  assert worker.metrics.counts["store_retries"] > 0 and store.count() == 0
  assert queue.backlog() == 2  # not acknowledged: once the lease runs out, the next worker gets them
  time.sleep(0.2)
  assert len(open_queue(queue_url).receive(10, wait_s=1)) == 2


def test_a_message_delivered_too_often_is_dead_lettered_as_poison(make_urls, tiny_embedder, tmp_path):
  queue_url, store_url = make_urls(f"sqlite:///{tmp_path / 'q.db'}", lease_s=0.05)
  queue = open_queue(queue_url)
  queue.publish([encode_event(1, "crashes the worker, say")])
  for _ in range(2):  # two workers died holding it
    assert len(queue.receive(1, wait_s=1)) == 1
    time.sleep(0.1)
  # The lease runs out within the batch wait, so the message comes twice: counted once.
  worker = Worker(tiny_embedder.embed, queue, open_store(store_url), WorkerConfig(max_deliveries=2, max_wait_s=0.2))
  assert worker.step() == 1
  [letter] = queue.dead_letters()
  assert letter.reason.startswith("poison: delivered ") and int(letter.reason.split()[2]) >= 3
  assert worker.metrics.dead_letters == {"poison": 1} and queue.backlog() == 0


def test_a_new_post_is_searchable_within_seconds(backend, make_urls, tiny_embedder, wait_for):
  queue_url, store_url = make_urls(backend)
  queue, store = open_queue(queue_url), open_store(store_url)
  old = posts(30, seed=2)
  queue.publish([encode_event(i, t) for i, t in old.items()])
  index = LiveIndex(open_store(store_url)).follow(interval_s=0.05)
  try:
    with Running(Worker(tiny_embedder.embed, queue, store, FAST)):
      wait_for(lambda: len(index) == 30, 30, "the first posts in the index")
      text = "we are hiring a data team today"
      query = tiny_embedder.embed([text])
      published = time.monotonic()
      queue.publish([encode_event("fresh", text)])
      wait_for(lambda: index.search(query, k=1)[1][0] == ["fresh"], 5, "the new post to be the top hit")
      assert time.monotonic() - published < 5
  finally:
    index.close()


def test_metrics_are_served_as_prometheus_text_and_json(make_urls, tiny_embedder, tmp_path):
  queue_url, store_url = make_urls(f"sqlite:///{tmp_path / 'q.db'}")
  queue = open_queue(queue_url)
  queue.publish([encode_event(1, "hello"), b"oops"])
  worker = Worker(tiny_embedder.embed, queue, open_store(store_url), FAST)
  worker.step()
  worker.metrics.backlog = queue.backlog()
  server = worker.metrics.serve(0)
  try:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    snap = json.loads(urllib.request.urlopen(base + "/metrics.json", timeout=5).read())
  finally:
    server.shutdown()
  assert 'pe_nearline_events_total{outcome="stored"} 1' in text
  assert 'pe_nearline_dead_letters_total{reason="not_json"} 1' in text
  assert 'pe_nearline_latency_seconds{quantile="0.99"}' in text and "pe_nearline_backlog 0" in text
  assert snap["counts"]["stored"] == 1 and snap["dead_letters"] == {"not_json": 1}
  assert worker.metrics.log_line().startswith("nearline: stored=1 dead=1 ")
