"""README.md for an exported model: what it started from, what it was trained on and how it scored.

Everything comes from the workdir (config.json, model.json, metrics.jsonl), so the card cannot claim more
than the run did: the training datasets are listed in full, so a "zero-shot" result on one of them would show.
"""

from __future__ import annotations

import collections
from typing import Any

from pe_jax.export.checkpoint import ExportSource
from pe_jax.training.metrics_writer import METRICS_FILE, read_metrics

# Hub ids of pe_jax's weight aliases, for the card's `base_model`.
HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
           "multilingual-e5-small": "intfloat/multilingual-e5-small"}


def eval_record(records: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
  """The last evaluation at or before `step` (the exported checkpoint's own, when it was evaluated)."""
  evals = [r for r in records if r["step"] <= step and any(k.startswith("eval/") for k in r)]
  return evals[-1] if evals else None


def task_steps(records: list[dict[str, Any]], step: int) -> collections.Counter:
  """Shard-steps per task among the logged steps up to `step`: the mixture as it was drawn."""
  counts: collections.Counter = collections.Counter()
  for r in records:
    if r["step"] <= step and "tasks" in r:
      counts.update(r["tasks"])
  return counts


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
          *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _number(v: Any) -> str:
  return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(source: ExportSource, *, title: str) -> str:
  config, cfg, step = source.run_config, source.encoder.cfg, source.step
  model = config.get("model", {})
  base, random_init = model.get("base", "?"), model.get("random_init", False)
  tasks = {n: t for n, t in config.get("tasks", {}).items() if t.get("weight", 1.0) != 0}
  zero_shot = config.get("eval", {}).get("zero_shot", {})
  records = read_metrics(source.workdir) if (source.workdir / METRICS_FILE).exists() else []
  datasets = sorted({t["dataset"] for t in tasks.values()})

  front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
           "tags: [sentence-transformers, feature-extraction, pe_jax, post-embeddings]"]
  if not random_init and base in HUB_IDS:
    front.append(f"base_model: {HUB_IDS[base]}")
  front += ["datasets:", *(f"- {d}" for d in datasets), "---", ""]

  lines = [f"# {title}", "",
           "Post embeddings trained with pe_jax (a JAX/Flax reimplementation of LinkedIn's "
           "multi-task post embeddings, arXiv 2405.11344), exported from "
           f"`{source.workdir.name}` at step {step}.", "",
           "## Model", "",
           f"- Base: `{base}`" + (" — architecture and tokenizer only; weights randomly initialised (smoke run)"
                                  if random_init else f" ({HUB_IDS.get(base, 'local weights')})"),
           f"- Encoder: {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads, "
           f"{cfg.pooling} pooling" + (f", Dense projection to {cfg.projection_dim}-d (no activation)"
                                       if cfg.projection_dim else "")
           + (", L2-normalised" if cfg.normalize else ""),
           f"- Inputs truncated to {cfg.max_seq_length} tokens"
           + (f"; every text is prefixed with {source.prefix!r} (the default prompt)" if source.prefix else ""),
           "- Task heads (learned similarity scale and bias per task) are in `task_heads/`; "
           "embedding does not use them.", ""]

  lines += ["## Training", "", "### Tasks", ""]
  drawn = task_steps(records, step)
  total_drawn = sum(drawn.values()) or 1
  lines += _table(("task", "dataset:split", "loss", "weight", "share of logged steps"),
                  [(n, f"{t['dataset']}:{t['split']}", t.get("loss", "bce"), t.get("weight", 1.0),
                    f"{drawn[n] / total_drawn:.1%}") for n, t in tasks.items()])
  mix = config.get("mixture", {})
  optimizer = config.get("optimizer", {})
  lines += ["", "### Mixture and budget", "",
            f"- Mixture: scheme `{mix.get('scheme', '?')}`"
            + (f" (T = {mix['temperature']})" if mix.get("scheme") == "temperature" else "")
            + (f", sizes capped at {mix['cap']}" if mix.get("cap") else "")
            + (", a different task per data-parallel shard each step" if mix.get("per_shard") else ""),
            f"- Steps: {step} of {config.get('total_steps', '?')} planned; {config.get('batch_size', '?')} pairs per "
            f"data-parallel shard per step, gradient accumulation {config.get('grad_accum_steps', 1)}",
            f"- Optimizer: learning rate {optimizer.get('learning_rate', '?')}, warmup "
            f"{optimizer.get('warmup_steps', '?')} steps, {optimizer.get('decay', '?')} decay, weight decay "
            f"{optimizer.get('weight_decay', '?')}; seed {config.get('seed', '?')}", ""]

  lines += ["## Evaluation", ""]
  record = eval_record(records, step)
  if record is None:
    lines += ["No evaluation was recorded up to this checkpoint.", ""]
  else:
    lines += [f"From `metrics.jsonl`, the evaluation at step {record['step']}"
              + (" (this checkpoint)." if record["step"] == step else f" (the last one before step {step})."), ""]
    rows = [(k[len("eval/"):], _number(v)) for k, v in record.items() if k.startswith("eval/")]
    lines += _table(("metric", "value"), rows) + [""]
    if zero_shot:
      lines += ["Zero-shot sets (evaluated, trained on by no task): "
                + ", ".join(f"`{n}` ({z['dataset']}:{z['split']})" for n, z in zero_shot.items()) + ".", ""]

  lines += ["## Training data", "",
            *(f"- `{t['dataset']}` split `{t['split']}` (task `{n}`)" for n, t in tasks.items()), "",
            "Any evaluation on these datasets, or on data drawn from the same source, is not zero-shot.", ""]

  lines += ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
            "model = SentenceTransformer('PATH')", "embeddings = model.encode(['a post', 'another post'])",
            "```", "", "```sh", "python -m pe_jax.embed --model PATH --input posts.txt --output posts.npy", "```", ""]
  return "\n".join(front + lines)
