"""The Queue and Store contract, run against both backends: SQLite and a real redis-server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pe_jax.nearline.streams import open_queue, open_store, parse_url


def test_urls_parse_and_unknown_parameters_are_refused(tmp_path):
  url = parse_url("redis://example:6380/2?stream=s&group=g")
  assert (url.scheme, url.host, url.port, url.path, url.params) == ("redis", "example", 6380, "2", {"stream": "s", "group": "g"})
  assert parse_url("sqlite:////abs/x.db").path == "/abs/x.db"
  assert parse_url("sqlite:///rel/x.db?queue=q").path == "rel/x.db"
  with pytest.raises(ValueError, match="unknown backend 'kafkaa'"):
    parse_url("kafkaa://h/t")
  with pytest.raises(ValueError, match="sqlite:///relative.db"):
    parse_url("sqlite://host/x.db")
  with pytest.raises(ValueError, match="unknown parameter.*streem"):
    open_queue(f"sqlite:///{tmp_path / 'q.db'}?streem=posts")
  with pytest.raises(ValueError, match="lease_s='soon' is not a valid float"):
    open_queue(f"sqlite:///{tmp_path / 'q.db'}?lease_s=soon")
  with pytest.raises(ValueError, match="not a plain table name"):
    open_store(f"sqlite:///{tmp_path / 'q.db'}?table=x;drop")


def test_publish_receive_ack_and_backlog(backend, make_urls):
  queue_url, _ = make_urls(backend)
  queue = open_queue(queue_url, consumer="a")
  ids = queue.publish([b"one", b"two", b"three"])
  assert len(set(ids)) == 3 and queue.backlog() == 3
  got = queue.receive(2, wait_s=1)
  assert [m.body for m in got] == [b"one", b"two"] and [m.id for m in got] == ids[:2]
  assert all(m.deliveries == 1 and abs(m.enqueued_at - time.time()) < 5 for m in got)
  assert queue.backlog() == 3  # received is not done
  queue.ack(got)
  assert queue.backlog() == 1
  assert [m.body for m in queue.receive(10, wait_s=1)] == [b"three"]
  start = time.monotonic()
  assert queue.receive(10, wait_s=0.3) == []  # waits, then gives up
  assert 0.25 < time.monotonic() - start < 3


def test_two_consumers_share_the_queue(backend, make_urls):
  queue_url, _ = make_urls(backend)
  a, b = open_queue(queue_url, consumer="a"), open_queue(queue_url, consumer="b")
  a.publish([str(i).encode() for i in range(10)])
  got_a, got_b = a.receive(6, wait_s=1), b.receive(6, wait_s=1)
  assert len(got_a) == 6 and len(got_b) == 4
  assert sorted(int(m.body) for m in got_a + got_b) == list(range(10))


def test_a_dead_consumers_messages_are_delivered_again(backend, make_urls):
  # The idle time / lease is short here; workers use 30 s by default.
  queue_url, _ = make_urls(backend, **({"lease_s": 0.3} if backend.startswith("sqlite") else {"claim_idle_s": 0.3}))
  dead, alive = open_queue(queue_url, consumer="dead"), open_queue(queue_url, consumer="alive")
  dead.publish([b"x", b"y"])
  taken = dead.receive(10, wait_s=1)
  assert len(taken) == 2
  assert alive.receive(10, wait_s=0.1) == []  # owned by a consumer that may still be working
  time.sleep(0.4)
  again = alive.receive(10, wait_s=1)
  assert [m.body for m in again] == [b"x", b"y"] and [m.id for m in again] == [m.id for m in taken]
  assert [m.deliveries for m in again] == [2, 2]
  alive.ack(again)
  assert alive.backlog() == 0
  dead.ack(taken)  # the late ack of a consumer thought dead is harmless
  assert alive.backlog() == 0


def test_a_restarted_consumer_gets_its_own_pending_messages_first(make_urls, redis_port):
  queue_url, _ = make_urls(f"redis://127.0.0.1:{redis_port}/0")
  first = open_queue(queue_url, consumer="w1")
  first.publish([b"a", b"b", b"c"])
  assert len(first.receive(2, wait_s=1)) == 2
  restarted = open_queue(queue_url, consumer="w1")  # same name, as after a restart
  got = restarted.receive(10, wait_s=1)
  assert [m.body for m in got] == [b"a", b"b"] and [m.deliveries for m in got] == [2, 2]
  assert [(m.body, m.deliveries) for m in restarted.receive(10, wait_s=1)] == [(b"c", 1)]
  assert restarted.receive(10, wait_s=0.1) == []


def test_dead_letters_keep_body_and_reason_and_leave_the_backlog(backend, make_urls):
  queue_url, _ = make_urls(backend)
  queue = open_queue(queue_url)
  queue.publish([b"not json", b"fine"])
  bad, good = queue.receive(2, wait_s=1)
  queue.dead_letter(bad, "not_json: Expecting value at line 1 column 1")
  [letter] = queue.dead_letters()
  assert (letter.source_id, letter.body, letter.reason) == (bad.id, b"not json", "not_json: Expecting value at line 1 column 1")
  assert queue.backlog() == 1
  queue.ack([good])
  assert queue.backlog() == 0


def test_store_upserts_by_id_and_lists_changes_since_a_version(backend, make_urls):
  _, store_url = make_urls(backend)
  store = open_store(store_url)
  v = np.arange(12, dtype=np.float32).reshape(3, 4)
  store.upsert(["a", "b", "c"], v, stored_at=100.0)
  ids, vectors, version = store.changes(0)
  assert ids == ["a", "b", "c"] and np.array_equal(vectors, v) and version > 0
  assert store.changes(version)[0::2] == ([], version)

  store.upsert(["b", "c"], np.stack([v[1], v[2] + 1]), stored_at=200.0)  # b replayed unchanged, c edited
  assert store.count() == 3
  ids, vectors, newer = store.changes(version)
  assert ids == ["c"] and np.array_equal(vectors, [v[2] + 1]) and newer > version
  got = store.fetch(["a", "b", "c", "missing"])
  assert sorted(got) == ["a", "b", "c"]
  assert got["b"].stored_at == 100.0  # an identical write changed nothing, not even the time
  assert got["c"].stored_at == 200.0 and np.array_equal(got["c"].vector, v[2] + 1)
  ids, _, _ = store.changes(0, limit=2)
  assert ids == ["a", "b"]  # oldest version first, each id once
  with pytest.raises(ValueError, match="2 ids but 3 vectors"):
    store.upsert(["x", "y"], v, stored_at=0.0)
