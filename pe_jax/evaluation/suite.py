"""The evaluation suite of a config: per-task triplet accuracy plus the zero-shot sets.

The trainer, `pe_jax.evaluate` and the ablations all build it here, so a baseline and a trained
model are always scored by the same code on the same triplets.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import ml_collections
import numpy as np

from pe_jax.data import load as data_load
from pe_jax.evaluation.evaluators import EmbedFn, Evaluator, KnnEvaluator, TripletEvaluator, make_evaluator
from pe_jax.suggest import did_you_mean

MEAN_KEY = "triplet_acc/mean"  # over the config's tasks, zero-shot sets excluded


def training_splits(task: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(dataset, split) of every split a task spec trains on: one, or each language and split of a
  translation task (`languages` set)."""
  if task.get("languages"):
    return data_load.parallel_splits(task.dataset, task.split, (task.pivot, *task.languages))
  return [(task.dataset, task.split)]


def check_no_leak(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that trains on a split that an evaluation reads (see MANIFEST's overlaps)."""
  evals = [(t.dataset, t.eval_split, f"task {name!r} eval") for name, t in config.tasks.items() if t.eval_split]
  evals += [(z.dataset, z.split, f"zero-shot {name!r}") for name, z in config.eval.zero_shot.items()]
  problems = []
  for name, task in config.tasks.items():
    if task.weight == 0:
      continue
    for train_dataset, train_split in training_splits(task):
      for dataset, split, what in evals:
        reason = data_load.overlaps(train_dataset, train_split, dataset, split)
        if reason:
          problems.append(f"task {name!r} trains on {train_dataset}:{train_split}, but {what} reads "
                          f"{dataset}:{split}: {reason}")
  if problems:
    raise ValueError("train/eval leak:\n  " + "\n  ".join(problems))


def select_sets(config: ml_collections.ConfigDict, names: Sequence[str] | None) -> ml_collections.ConfigDict:
  """A copy of `config` scoring only the tasks and zero-shot sets in `names` (`config` itself when None);
  a name the config lacks is refused, with the nearest one."""
  if names is None:
    return config
  known = [*config.tasks, *config.eval.zero_shot]
  for name in names:
    if name not in known:
      raise ValueError(f"{name!r} is neither a task nor a zero-shot set of the config"
                       f"{did_you_mean(name, known)}; it has: {', '.join(known)}")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for name in [n for n in config.tasks if n not in names]:
      del config.tasks[name]
    config.eval.zero_shot = {n: v for n, v in config.eval.zero_shot.items() if n in names}
  return config


def build_suite(config: ml_collections.ConfigDict, *, data_dir=None, tfds_dir=None) -> dict[str, Evaluator]:
  """Evaluator per name: every task in the config with an `eval_split` (dropped ones too: they are
  zero-shot then; a translation task has none: its test is the zero-shot bitext sets)."""
  check_no_leak(config)
  load = lambda dataset, split: data_load.load_split(dataset, split, data_dir=data_dir, tfds_dir=tfds_dir)
  # Triplets drawn with the eval seed, not the run's: runs with different seeds meet the same triplets.
  seed = config.eval.get("seed", config.seed)
  knn = config.eval.get("knn")  # the labeling tasks' natural metric: k-NN accuracy and macro-F1
  suite: dict[str, Evaluator | TaskEvaluators] = {}
  for name, task in config.tasks.items():
    if not task.eval_split:
      continue
    test = load(task.dataset, task.eval_split)
    suite[name] = TripletEvaluator(test, num_triplets=config.eval.num_triplets, seed=seed)
    if knn:
      suite[name] = TaskEvaluators(suite[name], KnnEvaluator(test, train=load(task.dataset, task.split),
                                                             seed=seed, **knn.to_dict()))
  for name, spec in config.eval.zero_shot.items():
    options = {k: v for k, v in spec.items() if k not in ("kind", "dataset", "split")}
    suite[name] = make_evaluator(spec.kind, data=load(spec.dataset, spec.split), **options)
  return suite


class TaskEvaluators:
  """Several evaluators of one task, their metrics merged under the task's name."""

  def __init__(self, *evaluators: Evaluator):
    self.evaluators = evaluators

  def run(self, embed_fn: EmbedFn) -> dict[str, float]:
    return {k: v for e in self.evaluators for k, v in e.run(embed_fn).items()}

  def outcomes(self, embed_fn: EmbedFn) -> np.ndarray:
    (triplets,) = [e for e in self.evaluators if isinstance(e, TripletEvaluator)]
    return triplets.outcomes(embed_fn)


def memoized(embed_fn: EmbedFn) -> EmbedFn:
  """`embed_fn` that embeds each distinct text once: evaluators of one task share most texts."""
  cache: dict[str, np.ndarray] = {}

  def embed(texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    new = [t for t in dict.fromkeys(texts) if t not in cache]
    if new:
      emb = np.asarray(embed_fn(new))
      if emb.ndim != 2 or emb.shape[0] != len(new):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(new)} texts; expected [{len(new)}, D]")
      cache.update(zip(new, emb))
    return np.stack([cache[t] for t in texts]) if texts else np.asarray(embed_fn(texts))

  return embed


def run_suite(suite: Mapping[str, Evaluator | TaskEvaluators], embed_fn: EmbedFn, *,
              tasks: Sequence[str] = (), outcomes: dict[str, np.ndarray] | None = None) -> dict[str, float]:
  """Flat {"<name>/<metric>": value}, plus the mean triplet accuracy over `tasks` (the config's).

  `outcomes`, when given, receives each triplet set's per-triplet outcomes by name (for paired
  statistics between models scored on the same triplets); the texts are embedded once either way.
  """
  embed_fn = memoized(embed_fn)
  results = {}
  for name, evaluator in suite.items():
    for metric, value in evaluator.run(embed_fn).items():
      results[f"{name}/{metric}"] = float(value)
    if outcomes is not None and hasattr(evaluator, "outcomes"):
      outcomes[name] = evaluator.outcomes(embed_fn)
  per_task = [results[f"{t}/triplet_acc"] for t in tasks if f"{t}/triplet_acc" in results]
  if per_task:
    results[MEAN_KEY] = float(np.mean(per_task))
  return results
