"""Near-line embedding: a worker that embeds each post seconds after its creation event.

  python -m pe_jax.nearline --model minilm-l6 --source sqlite:///nearline.db --store sqlite:///nearline.db
  python -m pe_jax.nearline --model WORKDIR --source 'redis://localhost:6379/0?stream=posts' \
      --store 'redis://localhost:6379/0?prefix=embeddings'

See `streams` for the backend URLs and guarantees, `worker` for the loop, `live_index` for retrieval
over the store while it fills.
"""

from pe_jax.nearline.events import Post, Rejection, encode_event, parse_event
from pe_jax.nearline.live_index import LiveIndex
from pe_jax.nearline.metrics import Metrics
from pe_jax.nearline.streams import Message, Queue, Store, open_queue, open_store
from pe_jax.nearline.worker import Worker, WorkerConfig

__all__ = ["LiveIndex", "Message", "Metrics", "Post", "Queue", "Rejection", "Store", "Worker", "WorkerConfig",
           "encode_event", "open_queue", "open_store", "parse_event"]
