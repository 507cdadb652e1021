r"""Near-line embedding under load: a producer publishes real posts, a `python -m pe_jax.nearline` worker embeds them.

  python scripts/bench_nearline.py                        # all-MiniLM-L6-v2, TweetEval emotion test posts, SQLite
  python scripts/bench_nearline.py --backend redis        # a throwaway redis-server on a free port
  python scripts/bench_nearline.py --json out.json

1. Offline: the same model embeds the same posts in this process with `Embedder.embed` (posts/s, steady state),
   before the worker starts and again after it stopped; the ratio uses the mean of the two.
2. Sustained maximum: `--n` posts are published at once; the worker's drain rate is posts / (last stored - first
   published).
3. Half that rate (`--rate_fraction`): the producer publishes at a steady rate for `--seconds`, each event stamped
   `created_at`; end-to-end latency is the store's `stored_at` minus `created_at`, per post (p50/p95/p99), and the
   backlog is sampled every second.
Targets: sustained >= 80% of offline, p99 at half rate < 2 s. The machine is shared: read the numbers with that.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_posts(data_dir: str) -> list[str]:
  from pe_jax.data.load import load_split

  return load_split("tweeteval/emotion", "test", data_dir=data_dir).texts


def offline_throughput(embedder, posts: list[str], repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    embedder.embed(posts)
    best = min(best, time.perf_counter() - start)
  return len(posts) / best


def start_redis(folder: pathlib.Path) -> tuple[subprocess.Popen, str]:
  binary = shutil.which("redis-server")
  if binary is None:
    sys.exit("--backend redis: redis-server not found (apt-get install -y redis-server), or pass --redis_url")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
  import redis

  client = redis.Redis(port=port)
  for _ in range(250):
    try:
      client.ping()
      return proc, f"redis://127.0.0.1:{port}/0"
    except redis.ConnectionError:
      time.sleep(0.02)
  proc.terminate()
  sys.exit(f"redis-server on port {port} did not answer PING within 5 s")


class Run:
  """The worker subprocess and the queue/store this process uses as producer and observer."""

  def __init__(self, args, folder: pathlib.Path, base_url: str):
    from pe_jax.nearline.streams import open_queue, open_store

    sep = "&" if "?" in base_url else "?"
    self.source = base_url + (f"{sep}stream=bench" if base_url.startswith("redis") else "")
    self.store_url = base_url + (f"{sep}prefix=bench" if base_url.startswith("redis") else "")
    self.queue, self.store = open_queue(self.source, consumer="producer"), open_store(self.store_url)
    self.metrics_file, self.log = folder / "worker.json", folder / "worker.log"
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "pe_jax.nearline", "--model", args.model, "--source", self.source, "--store",
         self.store_url, "--batch_size", str(args.batch_size), "--max_wait_ms", str(args.max_wait_ms),
         "--embed_batch", str(args.embed_batch), "--report_every_s", "1", "--metrics_file", str(self.metrics_file)],
        cwd=REPO, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

  def metrics(self) -> dict:
    try:
      return json.loads(self.metrics_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
      return {}

  def wait(self, condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
      if self.proc.poll() is not None:
        sys.exit(f"worker exited with {self.proc.returncode} while waiting for {what}:\n{self.log.read_text()[-3000:]}")
      if time.monotonic() > deadline:
        sys.exit(f"timed out after {timeout_s} s waiting for {what}; worker log: {self.log}")
      time.sleep(0.05)

  def publish(self, ids: list[str], texts: list[str]) -> float:
    from pe_jax.nearline.events import encode_event

    now = time.time()
    self.queue.publish([encode_event(i, t, created_at=now) for i, t in zip(ids, texts)])
    return now

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.terminate()
      self.proc.wait(60)


def max_throughput(run: Run, posts: list[str], n: int) -> dict:
  ids = [f"max-{i}" for i in range(n)]
  texts = [posts[i % len(posts)] for i in range(n)]
  before = run.store.count()
  start = run.publish(ids, texts)
  run.wait(lambda: run.store.count() >= before + n, 1200, f"{n} posts stored")
  last = max(s.stored_at for s in run.store.fetch(ids).values())
  return {"posts": n, "seconds": last - start, "posts_per_s": n / (last - start)}


def steady_rate(run: Run, posts: list[str], rate: float, seconds: float) -> dict:
  ids: list[str] = []
  created: dict[str, float] = {}
  backlog = []
  start = time.monotonic()
  next_sample = start
  while (elapsed := time.monotonic() - start) < seconds:
    due = int(elapsed * rate) - len(ids)
    if due > 0:  # every tick publishes what the clock says is due: a steady rate, however long a tick took
      new = [f"rate-{len(ids) + j}" for j in range(due)]
      at = run.publish(new, [posts[(len(ids) + j) % len(posts)] for j in range(due)])
      created.update(dict.fromkeys(new, at))
      ids += new
    if time.monotonic() >= next_sample:
      backlog.append(run.queue.backlog())
      next_sample += 1.0
    time.sleep(0.01)
  published_s = time.monotonic() - start
  run.wait(lambda: len(run.store.fetch(ids[-100:])) == min(100, len(ids)) and run.queue.backlog() == 0, 600,
           "the last posts stored")
  stored = run.store.fetch(ids)
  missing = len(ids) - len(stored)
  latency = np.array([stored[i].stored_at - created[i] for i in ids if i in stored])
  return {"target_rate": rate, "posts": len(ids), "achieved_rate": len(ids) / published_s, "missing": missing,
          "latency_s": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)} | {"max": float(latency.max())},
          "backlog_max": max(backlog), "backlog_mean": float(np.mean(backlog))}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="minilm-l6")
  p.add_argument("--data_dir", default=os.environ.get("PE_JAX_DATA_DIR", str(REPO.parent / "shared" / "data")))
  p.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
  p.add_argument("--redis_url", help="an existing Redis (default: start a throwaway redis-server)")
  p.add_argument("--n", type=int, default=3000, help="posts published at once for the maximum throughput")
  p.add_argument("--rate_fraction", type=float, default=0.5)
  p.add_argument("--seconds", type=float, default=60, help="how long the producer runs at the steady rate")
  p.add_argument("--batch_size", type=int, default=256, help="worker micro-batch (events)")
  p.add_argument("--max_wait_ms", type=float, default=100)
  p.add_argument("--embed_batch", type=int, default=8, help="packed rows per jitted call, offline and in the worker")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--json", help="also write the results here")
  args = p.parse_args()

  from pe_jax.runtime import enable_compilation_cache

  enable_compilation_cache()
  from pe_jax.serving.embedder import Embedder

  posts = load_posts(args.data_dir)
  embedder = Embedder.from_pretrained(args.model, batch_size=args.embed_batch)
  embedder.embed(posts)  # compiles the row shapes these posts need
  offline_before = offline_throughput(embedder, posts, args.repeats)
  print(f"offline Embedder.embed: {offline_before:,.1f} posts/s ({len(posts)} TweetEval emotion test posts, "
        f"{args.model}, {args.embed_batch} rows a call)")

  with tempfile.TemporaryDirectory(prefix="bench_nearline_") as tmp:
    folder = pathlib.Path(tmp)
    redis_proc = None
    if args.backend == "redis":
      base = args.redis_url
      if base is None:
        redis_proc, base = start_redis(folder)
    else:
      base = f"sqlite:///{folder / 'nearline.db'}"
    run = Run(args, folder, base)
    try:
      started = time.monotonic()
      run.wait(lambda: run.metrics().get("ready"), 1800, "the worker to load and warm up")
      print(f"worker ready (model loaded, both row shapes compiled) in {time.monotonic() - started:.1f} s")
      peak = max_throughput(run, posts, args.n)
      print(f"sustained maximum: {peak['posts_per_s']:,.1f} posts/s ({peak['posts']} posts in {peak['seconds']:.1f} s)")
      rate = args.rate_fraction * peak["posts_per_s"]
      steady = steady_rate(run, posts, rate, args.seconds)
      run.stop()
      worker = run.metrics()
    finally:
      run.stop()
      if redis_proc is not None:
        redis_proc.terminate()
        redis_proc.wait(10)

  # Measured again now the worker is gone: on a shared machine the load moves, so the ratio uses the mean.
  offline_after = offline_throughput(embedder, posts, args.repeats)
  offline = (offline_before + offline_after) / 2
  print(f"offline Embedder.embed again: {offline_after:,.1f} posts/s; mean {offline:,.1f}")
  lat = steady["latency_s"]
  result = {"model": args.model, "backend": args.backend, "offline_posts_per_s": offline,
            "offline_before_after": [offline_before, offline_after], "max": peak,
            "steady": steady, "ratio_max_to_offline": peak["posts_per_s"] / offline, "worker_metrics": worker,
            "args": vars(args)}
  print(f"at {steady['target_rate']:,.1f} posts/s ({args.rate_fraction:.0%} of the maximum) for {args.seconds:.0f} s: "
        f"{steady['posts']} posts, latency p50 {lat['p50'] * 1000:,.0f} ms, p95 {lat['p95'] * 1000:,.0f} ms, "
        f"p99 {lat['p99'] * 1000:,.0f} ms, max {lat['max'] * 1000:,.0f} ms; backlog max {steady['backlog_max']}, "
        f"mean {steady['backlog_mean']:.1f}; missing {steady['missing']}")
  print(f"sustained / offline = {result['ratio_max_to_offline']:.2f} (target >= 0.80); "
        f"p99 at {args.rate_fraction:.0%} rate = {lat['p99']:.2f} s (target < 2 s)")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
