r"""Member retrieval and engagement ranking with simulated members, for one or more embedding models.

  python -m pe_jax.downstream.member_demo --models minilm-l6,workdirs/multitask \
      --dataset tweet_topic_single --split test_2021 --num_members 300 --out out/member_demo.json

Members follow 1-3 labels of the dataset (see `pe_jax.downstream.simulate`); 30% of each member's
engagements are held out. Retrieval: recall@k of the held-out posts from the whole split (history
excluded) with one mean vector, and with Ward centroids merged by best score ("max") or by weight
("quota"). Ranking: ROC-AUC of a ranker predicting engagement without and with embedding features.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import numpy as np
from absl import app, flags

_MODELS = flags.DEFINE_list("models", ["minilm-l6"], "Model specs (alias, HF folder or training workdir).")
_NAMES = flags.DEFINE_list("names", None, "Display names, one per model (default: the specs).")
_DATASET = flags.DEFINE_string("dataset", "tweet_topic_single", "Labeling dataset whose labels are the interests.")
_SPLIT = flags.DEFINE_string("split", "test_2021", "Its split: the corpus posts.")
_NUM_MEMBERS = flags.DEFINE_integer("num_members", 300, "Simulated members.")
_KS = flags.DEFINE_list("ks", ["10", "50", "100"], "Recall cut-offs.")
_WARD_CLUSTERS = flags.DEFINE_integer("ward_clusters", 3, "Most Ward clusters a history is cut into.")
_WARD_THRESHOLD = flags.DEFINE_float(
    "ward_threshold", None, "Cut at this Ward distance instead (its scale differs between models).")
_RANKER = flags.DEFINE_enum("ranker", "logistic", ["logistic", "gbdt"], "Engagement ranker.")
_SEED = flags.DEFINE_integer("seed", 0, "Simulation seed.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw data folder (default: $PE_JAX_DATA_DIR).")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "Prepared datasets (default: $PE_JAX_TFDS_DIR).")
_OUT = flags.DEFINE_string("out", None, "Where to write the results as JSON.")


def run_demo(post_embeddings: np.ndarray, members, *, ks, ward_cut: dict, ranker: str, labels: np.ndarray | None = None,
             post_features: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
  """Every retrieval variant and the ranker for one model's embeddings of the corpus posts; `ward_cut`
  holds `ward_profile`'s cut (num_clusters= or distance_threshold=)."""
  from pe_jax.downstream.member_eval import engagement_ranking_auc, member_retrieval_metrics
  from pe_jax.retrieval.index import ExactIndex
  from pe_jax.retrieval.members import mean_profile, ward_profile

  index = ExactIndex(post_embeddings.shape[1])
  index.add(post_embeddings)
  ward = functools.partial(ward_profile, **ward_cut)
  results = {}
  for name, profile, merge in (("mean", mean_profile, "max"), ("ward_max", ward, "max"),
                               ("ward_quota", ward, "quota")):
    scores = member_retrieval_metrics(index, post_embeddings, members, profile=profile, ks=ks, merge=merge,
                                      labels=labels)
    results.update({f"{name}/{key}": value for key, value in scores.items()})
  scores = engagement_ranking_auc(post_embeddings, members, profile=ward, post_features=post_features,
                                  model=ranker, seed=seed)
  results.update({f"ranker/{key}": value for key, value in scores.items()})
  return results


def markdown_table(results: dict[str, dict[str, float]]) -> str:
  names = list(results)
  keys = [k for k in next(iter(results.values())) if "num_" not in k]
  lines = [f"| metric | {' | '.join(names)} |", f"|---|{'---|' * len(names)}"]
  lines += [f"| {k} | {' | '.join(f'{results[n][k]:.3f}' for n in names)} |" for k in keys]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from pe_jax.data.load import load_split
  from pe_jax.downstream.simulate import simulate_members
  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  names = _NAMES.value or _MODELS.value
  if len(names) != len(_MODELS.value):
    raise app.UsageError(f"--names has {len(names)} entries for {len(_MODELS.value)} --models")
  data = load_split(_DATASET.value, _SPLIT.value, data_dir=_DATA_DIR.value, tfds_dir=_TFDS_DIR.value)
  members = simulate_members(data.labels, num_members=_NUM_MEMBERS.value, seed=_SEED.value)
  print(f"{len(members)} members over {len(data.texts)} posts of {data.name}: "
        f"{np.mean([len(m.history) for m in members]):.1f} history / "
        f"{np.mean([len(m.held_out) for m in members]):.1f} held-out posts on average")
  ward_cut = (dict(distance_threshold=_WARD_THRESHOLD.value) if _WARD_THRESHOLD.value is not None
          else dict(num_clusters=_WARD_CLUSTERS.value))
  text_length = np.log1p([len(t) for t in data.texts])[:, None]
  results = {}
  for name, spec in zip(names, _MODELS.value):
    start = time.perf_counter()
    embeddings = Embedder.from_pretrained(spec).embed(data.texts)
    embedded = time.perf_counter()
    results[name] = run_demo(embeddings, members, ks=[int(k) for k in _KS.value],
                             ward_cut=ward_cut, ranker=_RANKER.value, labels=data.labels,
                             post_features=text_length, seed=_SEED.value)
    print(f"{name}: {embeddings.shape[1]}-d, embedded in {embedded - start:.0f} s, "
          f"evaluated in {time.perf_counter() - embedded:.0f} s")
  print(markdown_table(results))
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
