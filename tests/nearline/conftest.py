"""A real redis-server per test session (skips when the binary is missing), backend URLs per test, and one
warmed-up tiny embedder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest

from pe_jax.models.loading import load_model
from pe_jax.serving.embedder import Embedder


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory) -> int:
  """A throwaway redis-server on a free localhost port: no snapshots, no append-only file."""
  binary = shutil.which("redis-server")
  if binary is None:
    pytest.skip("redis-server not installed (Debian: apt-get install -y redis-server)")
  redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install redis)")
  folder = tmp_path_factory.mktemp("redis")
  port = free_port()
  proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--dir", str(folder)], stdout=open(folder / "redis.log", "wb"), stderr=subprocess.STDOUT)
  client = redis.Redis(port=port)
  try:
    for _ in range(200):
      try:
        client.ping()
        break
      except redis.ConnectionError:
        if proc.poll() is not None:
          pytest.fail(f"redis-server exited with {proc.returncode}: {(folder / 'redis.log').read_text()[-2000:]}")
        time.sleep(0.02)
    else:
      pytest.fail(f"redis-server on port {port} did not answer PING within 4 s")
    yield port
  finally:
    client.close()
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path) -> str:
  """Each test twice: on a SQLite file of its own and on the session's Redis."""
  if request.param == "sqlite":
    return f"sqlite:///{tmp_path / 'nearline.db'}"
  return f"redis://127.0.0.1:{request.getfixturevalue('redis_port')}/0"


@pytest.fixture
def make_urls():
  """(queue URL, store URL) under a base URL; Redis gets key names unique to the call, so tests never share keys."""
  def make(base: str, **queue_params) -> tuple[str, str]:
    store_params = {}
    if base.startswith("redis"):
      tag = uuid.uuid4().hex[:8]
      queue_params.setdefault("stream", f"posts-{tag}")
      store_params["prefix"] = f"emb-{tag}"
    query = lambda params: "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return base + query(queue_params), base + query(store_params)

  return make


@pytest.fixture(scope="session")
def tiny_embedder(tiny_bert_dir) -> Embedder:
  model, tokenizer, prefix = load_model(str(tiny_bert_dir))
  embedder = Embedder(model, tokenizer, prefix=prefix, batch_size=8)
  embedder.warmup()
  return embedder


@pytest.fixture
def wait_for():
  """wait_for(condition, timeout_s, what): polls until `condition()` is truthy, fails naming `what` on timeout."""
  def wait(condition, timeout_s: float, what: str, interval_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      value = condition()
      if value:
        return value
      time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")

  return wait
