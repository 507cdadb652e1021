"""Positive-transfer ablations: each task alone, all together, all but one, recipe variants; one
command, one report.

  plan.py       which runs, each with a matched per-task anchor budget, and the plan's estimated time
  baselines.py  the untrained references (base at full width, base cut by PCA)
  runner.py     run_ablation(config, workdir): resumable runs scored on one shared suite, then the report
  stats.py      paired differences on the same triplets and seeds, bootstrap intervals, verdicts
  report.py     transfer.json / transfer.md / transfer.png
"""

from pe_jax.ablation.runner import run_ablation

__all__ = ["run_ablation"]
