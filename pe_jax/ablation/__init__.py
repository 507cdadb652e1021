"""Positive-transfer ablations: each task alone, all together, all but one; one command, one report.

  plan.py       which runs, each with a matched per-task example budget
  baselines.py  the untrained references (base at full width, base cut by PCA)
  runner.py     run_ablation(config, workdir): resumable runs, then the report
  report.py     transfer.json / transfer.md / transfer.png
"""

from pe_jax.ablation.runner import run_ablation

__all__ = ["run_ablation"]
