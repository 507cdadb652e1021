r"""The ablation machinery end to end on a tiny random model and three real tasks (tests, a first try).

  python -m pe_jax.ablate --config configs/ablation/smoke.py --workdir /tmp/ablation

Every task in every step and the PCA start (the recipe's) on multitask.py's smoke model; one
variant, the paper's one task per step, exercises the variant rows.
"""

from configs import multitask
from configs.ablation import posts


def get_config(arg: str | None = None):
  multitask.parse_switches(arg, ())  # it has no switches: refuse any, rather than ignore it
  c = multitask.get_config("smoke")
  c.mixture.scheme = "uniform"
  c.mixture.tasks_per_step = 0
  c.model.projection_init = "pca"
  c.total_steps = 12
  c.checkpoint_every = 4
  c.eval.num_triplets = 100
  c.model.encoder.max_seq_length = 32
  c.model.encoder.projection_dim = 16  # below the tiny encoder's width (32), so PCA can cut to it
  c.ablation = posts.ablation(variants={"one_task_per_step": {"mixture": {"tasks_per_step": 1}}})
  c.ablation.pca_fit_posts = 120
  c.ablation.min_anchors = 12 * c.batch_size
  c.ablation.update(dict(seconds_per_text=0.001, seconds_per_eval=5.0))
  return c
