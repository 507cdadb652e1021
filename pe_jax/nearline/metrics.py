"""What a person watches while the worker runs: a log line, a JSON file and a Prometheus endpoint.

Latency is event time (the post's `created_at`, else the broker's enqueue time) to the moment its
embedding was stored; percentiles are over the most recent `window` posts. Throughput is posts stored
per second over the last `rate_window_s` seconds.
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import pathlib
import threading
import time

import numpy as np

QUANTILES = (0.5, 0.95, 0.99)


class Metrics:
  def __init__(self, *, window: int = 10_000, rate_window_s: float = 30.0):
    self.started_at = time.time()
    self.ready_at: float | None = None  # model loaded and warmed up
    self.counts = collections.Counter()  # received, stored, acked, redelivered, batches, store_retries, ...
    self.dead_letters = collections.Counter()  # by reason code
    self.backlog: int | None = None
    self._latencies: collections.deque[float] = collections.deque(maxlen=window)
    self._stored: collections.deque[tuple[float, int]] = collections.deque()
    self._rate_window_s = rate_window_s
    self._lock = threading.Lock()

  def add(self, **counts: int) -> None:
    with self._lock:
      self.counts.update(counts)

  def dead_letter(self, code: str) -> None:
    with self._lock:
      self.dead_letters[code] += 1
      self.counts["dead_lettered"] += 1

  def stored(self, latencies_s: list[float]) -> None:
    now = time.monotonic()
    with self._lock:
      self.counts["stored"] += len(latencies_s)
      self._latencies.extend(latencies_s)
      self._stored.append((now, len(latencies_s)))

  def snapshot(self) -> dict:
    now = time.monotonic()
    with self._lock:
      while self._stored and self._stored[0][0] < now - self._rate_window_s:
        self._stored.popleft()
      span = min(self._rate_window_s, time.time() - (self.ready_at or self.started_at))
      latencies = np.fromiter(self._latencies, float)
      return {
          "time": time.time(),
          "uptime_s": round(time.time() - self.started_at, 3),
          "ready": self.ready_at is not None,
          "counts": dict(self.counts),
          "dead_letters": dict(self.dead_letters),
          "backlog": self.backlog,
          "throughput_per_s": round(sum(n for _, n in self._stored) / span, 2) if span > 0 else 0.0,
          "latency_s": ({f"p{round(q * 100)}": round(float(np.quantile(latencies, q)), 4) for q in QUANTILES}
                        | {"window": len(latencies)}) if len(latencies) else {},
      }

  def log_line(self, snap: dict | None = None) -> str:
    s = snap or self.snapshot()
    lat = s["latency_s"]
    latency = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in lat.items() if k != "window") or "no posts yet"
    c = s["counts"]
    return (f"nearline: stored={c.get('stored', 0)} dead={c.get('dead_lettered', 0)} "
            f"redelivered={c.get('redelivered', 0)} retries={c.get('store_retries', 0) + c.get('broker_retries', 0)} "
            f"backlog={s['backlog']} rate={s['throughput_per_s']}/s latency {latency}")

  def write_json(self, path: str | os.PathLike, snap: dict | None = None) -> None:
    """Atomically (write, then rename), so a reader never sees half a file."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snap or self.snapshot(), indent=1))
    os.replace(tmp, path)

  def prometheus(self) -> str:
    s = self.snapshot()
    lines = ["# TYPE pe_nearline_events_total counter"]
    lines += [f'pe_nearline_events_total{{outcome="{k}"}} {v}' for k, v in sorted(s["counts"].items())]
    lines += ["# TYPE pe_nearline_dead_letters_total counter"]
    lines += [f'pe_nearline_dead_letters_total{{reason="{k}"}} {v}' for k, v in sorted(s["dead_letters"].items())]
    lines += ["# TYPE pe_nearline_latency_seconds summary"]
    lines += [f'pe_nearline_latency_seconds{{quantile="{q}"}} {s["latency_s"][f"p{round(q * 100)}"]}'
              for q in QUANTILES if s["latency_s"]]
    lines += ["# TYPE pe_nearline_throughput_per_second gauge", f"pe_nearline_throughput_per_second {s['throughput_per_s']}"]
    if s["backlog"] is not None:
      lines += ["# TYPE pe_nearline_backlog gauge", f"pe_nearline_backlog {s['backlog']}"]
    lines += ["# TYPE pe_nearline_ready gauge", f"pe_nearline_ready {int(s['ready'])}"]
    return "\n".join(lines) + "\n"

  def serve(self, port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """GET /metrics (Prometheus text) and GET /metrics.json on a daemon thread; port 0 picks a free one."""
    metrics = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        if self.path == "/metrics":
          body, kind = metrics.prometheus().encode(), "text/plain; version=0.0.4"
        elif self.path == "/metrics.json":
          body, kind = json.dumps(metrics.snapshot()).encode(), "application/json"
        else:
          self.send_error(404, "try /metrics or /metrics.json")
          return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):  # scrapes every few seconds would drown the worker's own log
        pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
