r"""How much of the zero-shot sets a 50-d *linear* cut of the untuned base can keep.

  python scripts/linear_cuts.py --workdir workdirs/demo --out out/linear_cuts
  python scripts/compare_evals.py out/linear_cuts_base.json out/linear_cuts_pca_tweets.json \
      out/linear_cuts_pca_general.json out/linear_cuts_pca_both.json out/linear_cuts_fit_to_cosines.json

The trained 50-d model is held to the 384-d base on STS-B and the other zero-shot sets. This asks what
no training of the encoder can beat by a projection alone: the base's pooled embeddings through
- "PCA tweets": the run's own PCA start (`WORKDIR/projection_init.npz`, fitted on training posts);
- "PCA general": PCA fitted on general English sentences (STS-B *train*, never its test split);
- "PCA both": PCA on the training posts and those sentences together;
- "fit to cosines": a linear map started at "PCA tweets" and fitted by Adam to the base's pairwise
  cosines of the posts and sentences together (relational distillation with the encoder frozen),
each scored by configs/multitask.py's zero-shot sets beside the 384-d base. The posts are the first
--num_posts training posts of each of the main job's trained tasks.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import multitask  # noqa: E402
from pe_jax.data import load  # noqa: E402
from pe_jax.evaluation import metrics as metrics_lib  # noqa: E402
from pe_jax.evaluation import suite as suite_lib  # noqa: E402
from pe_jax.models.loading import load_model  # noqa: E402
from pe_jax.serving.embedder import Embedder  # noqa: E402
from pe_jax.training.warm_start import PROJECTION_INIT_FILE  # noqa: E402


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fit_to_cosines(pooled: np.ndarray, kernel: np.ndarray, bias: np.ndarray, steps: int) -> np.ndarray:
  """A linear map's kernel fitted to the base's pairwise cosines of `pooled`, started at `kernel`."""
  x = jnp.asarray(pooled)
  target = jnp.asarray(unit(pooled) @ unit(pooled).T)
  b = jnp.asarray(bias)

  def loss(k):
    z = x @ k + b
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    return jnp.mean((z @ z.T - target) ** 2)

  tx = optax.adam(1e-3)

  @jax.jit
  def step(k, state):
    value, grad = jax.value_and_grad(loss)(k)
    updates, state = tx.update(grad, state)
    return optax.apply_updates(k, updates), state, value

  k = jnp.asarray(kernel)
  state = tx.init(k)
  for _ in range(steps):
    k, state, _ = step(k, state)
  return np.asarray(k)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a training run of configs/multitask.py (its PCA start)")
  p.add_argument("--num_posts", type=int, default=700, help="training posts per trained task")
  p.add_argument("--num_sentences", type=int, default=2_000, help="STS-B train sentences")
  p.add_argument("--fit_steps", type=int, default=1_000)
  p.add_argument("--out", required=True, help="prefix: OUT_<cut>.json per cut, as pe_jax.evaluate writes")
  args = p.parse_args()

  init = pathlib.Path(args.workdir) / PROJECTION_INIT_FILE
  if not init.exists():
    sys.exit(f"linear_cuts.py: {init} does not exist: --workdir must be a training run with a PCA start")
  with np.load(init) as saved:
    kernel, bias = saved["kernel"], saved["bias"]
  encoder, tokenizer, prefix = load_model("minilm-l6")
  # Every cut projects the same pooled embeddings: each distinct text goes through the encoder once.
  pooled = suite_lib.memoized(Embedder(encoder.without_projection(normalize=False), tokenizer, prefix=prefix))

  posts = [text for name in multitask.DEMO_TASKS
           for text in load.load_split(*multitask.LABELING_TASKS[name][:2]).texts[: args.num_posts]]
  sts_train = load.load_split("stsb_multi_mt/en", "train")
  rng = np.random.default_rng(0)
  sentences = list(dict.fromkeys(sts_train.texts_a + sts_train.texts_b))
  sentences = [sentences[i] for i in rng.choice(len(sentences), args.num_sentences, replace=False)]
  p_posts, p_sentences = pooled(posts), pooled(sentences)
  both = np.concatenate([p_posts, p_sentences])

  def pca(x):
    fit = metrics_lib.pca_reduce(x, kernel.shape[1], normalize=False)
    return fit.components.T, -fit.mean @ fit.components.T

  cuts = {"base": None, "PCA tweets": (kernel, bias), "PCA general": pca(p_sentences),
          "PCA both": pca(both)}
  cuts["fit to cosines"] = (fit_to_cosines(both, kernel, bias, args.fit_steps), bias)
  config = multitask.recipe({}, multitask.ZERO_SHOT, base="minilm-l6")
  suite = suite_lib.build_suite(config)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  for name, cut in cuts.items():
    project = (lambda x: x) if cut is None else (lambda x, k=cut[0], b=cut[1]: x @ k + b)
    results = suite_lib.run_suite(suite, lambda texts, f=project: unit(f(pooled(texts))))
    path = out.with_name(f"{out.name}_{name.lower().replace(' ', '_')}.json")
    path.write_text(json.dumps({"model": f"minilm-l6, {name}", "results": results}, indent=1))
    print(f"{name}: STS-B {results['zs_sts/sts_spearman']:.4f}  MS MARCO nDCG@10 {results['zs_msmarco/ndcg@10']:.4f}"
          f"  PAWS-X AUC {results['zs_paws/pair_auc']:.4f}  tweet_topic_xl {results['zs_topic_xl/triplet_acc']:.4f}"
          f"  -> {path}", flush=True)


if __name__ == "__main__":
  main()
