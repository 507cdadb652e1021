r"""Runs one near-line worker until SIGTERM or Ctrl-C (it finishes the batch in hand, then exits 0).

  python -m pe_jax.nearline --model minilm-l6 --source sqlite:///nearline.db --store sqlite:///nearline.db
  python -m pe_jax.nearline --model WORKDIR --source 'redis://localhost:6379/0?stream=posts&group=embedder' \
      --store 'redis://localhost:6379/0?prefix=embeddings' --metrics_port 9108

Events are JSON objects with `id` and `text` (optionally `created_at`, `lang`); see pe_jax.nearline.streams
for the URL parameters. Start several workers on one source to share its stream.
"""

from __future__ import annotations

import logging
import signal
import time

from absl import flags

from pe_jax import cli
from pe_jax.nearline.events import DEFAULT_MAX_CHARS

_MODEL = flags.DEFINE_string("model", "minilm-l6", "Alias, Hugging Face folder, hub id or training workdir.")
_SOURCE = flags.DEFINE_string("source", None, "Queue URL: redis://HOST:PORT/DB?stream=... or sqlite:///PATH.db",
                              required=True)
_STORE = flags.DEFINE_string("store", None, "Store URL: redis://HOST:PORT/DB?prefix=... or sqlite:///PATH.db",
                             required=True)
_CONSUMER = flags.DEFINE_string("consumer", None, "This worker's name in its consumer group (default: host-pid).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Events per micro-batch at most.")
_WAIT = flags.DEFINE_float("max_wait_ms", 100, "How long the first event of a micro-batch waits for others.")
# A micro-batch of a few posts still fills a whole call: 8 rows of 128 tokens (about 40 tweets) keep that
# cost small, and on CPU larger calls are no faster per post (pe_jax.serving.embedder).
_EMBED_BATCH = flags.DEFINE_integer("embed_batch", 8, "Packed rows per jitted embedding call (fixed shape).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_MAX_CHARS = flags.DEFINE_integer("max_chars", DEFAULT_MAX_CHARS, "Longer texts are dead-lettered.")
_MAX_DELIVERIES = flags.DEFINE_integer("max_deliveries", 5, "Delivered this often without an ack: dead-lettered.")
_METRICS_FILE = flags.DEFINE_string("metrics_file", None, "JSON file rewritten at every report.")
_METRICS_PORT = flags.DEFINE_integer("metrics_port", None, "Serve /metrics (Prometheus) and /metrics.json here.")
_REPORT = flags.DEFINE_float("report_every_s", 10, "Seconds between metric reports (log line, JSON file).")

log = logging.getLogger("pe_jax.nearline")


def main(argv):
  del argv
  from pe_jax.nearline.metrics import Metrics
  from pe_jax.nearline.streams import open_queue, open_store
  from pe_jax.nearline.worker import Worker, WorkerConfig

  metrics = Metrics()
  if _METRICS_PORT.value is not None:
    server = metrics.serve(_METRICS_PORT.value)
    log.info("metrics on http://%s:%d/metrics", *server.server_address[:2])
  # Backends first: a wrong URL fails before minutes of model loading.
  queue = open_queue(_SOURCE.value, consumer=_CONSUMER.value)
  store = open_store(_STORE.value)
  config = WorkerConfig(batch_size=_BATCH.value, max_wait_s=_WAIT.value / 1000, max_chars=_MAX_CHARS.value,
                        max_deliveries=_MAX_DELIVERIES.value, report_every_s=_REPORT.value,
                        metrics_file=_METRICS_FILE.value)

  from pe_jax.runtime import enable_compilation_cache  # jax, only now: a wrong URL fails in a second
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  start = time.perf_counter()
  embedder = Embedder.from_pretrained(_MODEL.value, batch_size=_EMBED_BATCH.value,
                                      config_overrides={"dtype": _DTYPE.value})
  embedder.warmup()  # both row shapes, so no post ever waits for XLA
  metrics.ready_at = time.time()
  log.info("model %s loaded and %d shapes compiled in %.1f s", _MODEL.value, len(embedder.shapes),
           time.perf_counter() - start)

  worker = Worker(embedder.embed, queue, store, config, metrics)

  def drain(signum, frame):
    log.info("%s: finishing the batch in hand (send it again to quit at once)", signal.Signals(signum).name)
    worker.stop()
    signal.signal(signum, signal.SIG_DFL)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, drain)
  try:
    worker.run()
  finally:
    queue.close()
    store.close()


if __name__ == "__main__":
  cli.run(main, console=("pe_jax.nearline",))  # the worker's own lines: progress, metrics, retries
