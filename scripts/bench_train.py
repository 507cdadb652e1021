r"""Training-step throughput: our jitted step vs a PyTorch step, same model, batch, length and loss.

  python scripts/bench_train.py                         # 32 pairs x 64 tokens, 20 timed steps, CPU
  python scripts/bench_train.py --steps 5 --batch_size 4 --seq_len 16 --json out.json

Both sides train all-MiniLM-L6-v2 (mean pooling) + a 50-d projection + one task head (learnable
scale and bias) with the paper's pair BCE on scaled cosine over (anchor, positive, 1) and
(anchor, negative, 0), AdamW with global-norm clipping, fp32. pe_jax is our real trainer:
`build_model`, `make_optimizer` and `make_train_step` from configs/multitask.py (one task, constant
learning rate). torch is transformers' BertModel ("sdpa" attention) with the same head, loss and
optimizer, in train mode with dropout set to 0 so that both compute the same function.

The batch is built once here by our `BatchBuilder` (real TweetEval emotion anchors, positives sharing a
label, negatives sharing none): pe_jax trains on it as its trainer does, several texts packed into each
row of --seq_len tokens; the peer gets the same texts one per row, padded to --seq_len, as a
padded trainer does. The new projection starts from the same numbers on both sides. Each system runs
in a fresh subprocess: 2 warm-up steps (the first includes jit compilation), then --steps timed steps.
The first-step losses must agree (same weights, same batch), which shows the two steps compute the
same thing. "Whole process" is launch to the last step's end. The machine is noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from bench_common import minilm_folder, peak_rss_mb  # noqa: E402 - scripts/ is on sys.path

REPO = pathlib.Path(__file__).resolve().parents[1]
TASK = "emotion"
WARMUP_STEPS = 2


def benchmark_config(seq_len: int, batch_size: int):
  """configs/multitask.py reduced to one task, with a constant learning rate so no step has lr 0."""
  spec = importlib.util.spec_from_file_location("multitask_config", REPO / "configs" / "multitask.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  # The paper's pair BCE (anchor-positive, anchor-negative), which the torch step below writes out.
  config = module.paper_recipe(module.get_config())
  config.tasks[TASK].bce_in_batch = False
  for name in list(config.tasks):
    if name != TASK:
      del config.tasks[name]
  config.batch_size = batch_size
  config.model.encoder.max_seq_length = seq_len
  config.model.encoder.dtype = "float32"  # as the torch step: the first-step losses must agree ("auto" may pick bf16)
  config.optimizer.warmup_steps = 0
  config.optimizer.decay = "constant"
  return config




def write_inputs(path: pathlib.Path, data_dir: str, seq_len: int, batch_size: int) -> None:
  """The batch of training step 0 as our trainer builds it, plus the new parameters' start values."""
  import jax
  import numpy as np

  from pe_jax import sharding as sharding_lib
  from pe_jax.data import load as data_load
  from pe_jax.models import pretrained
  from pe_jax.tasks.pairs import LabelingPairs
  from pe_jax.tokenization import TextTokenizer
  from pe_jax.training.batches import BatchBuilder

  config = benchmark_config(seq_len, batch_size)
  spec = config.tasks[TASK]
  task = LabelingPairs(data_load.load_split(spec.dataset, spec.split, data_dir=data_dir))
  source = pretrained.resolve(config.model.base, **config.model.encoder.to_dict())
  tokenizer = TextTokenizer(source.tokenizer, max_length=seq_len, pad_id=source.config.pad_token_id)
  builder = BatchBuilder({TASK: task}, {TASK: 1.0}, tokenizer, mesh=sharding_lib.single_device_mesh(),
                         batch_size_per_shard=batch_size, seed=config.seed, per_shard_tasks=True)
  _, batch = builder.build(0)
  batch = {k: np.asarray(jax.device_get(v)) for k, v in batch.items()}
  # The peer gets the same texts one per row, padded to exactly seq_len (anchors, positives, negatives).
  num_texts = 3 * batch_size
  torch_ids = np.full((num_texts, seq_len), tokenizer.pad_id, np.int32)
  torch_mask = np.zeros((num_texts, seq_len), np.int32)
  for text in range(num_texts):
    tokens = batch["ids"][batch["segments"] == text + 1]
    torch_ids[text, : len(tokens)] = tokens
    torch_mask[text, : len(tokens)] = 1
  batch.update(torch_ids=torch_ids, torch_mask=torch_mask)
  rng = np.random.default_rng(config.seed)
  hidden, dim = source.config.hidden_size, config.model.encoder.projection_dim
  # Our projection's initialiser (truncated normal, std 0.02; zero bias), drawn once for both sides.
  kernel = np.clip(rng.normal(0.0, 0.02, (hidden, dim)), -0.04, 0.04).astype(np.float32)
  np.savez(path, **batch, projection_kernel=kernel, projection_bias=np.zeros(dim, np.float32),
           head_log_scale=np.float32(math.log(spec.head.scale_init)), head_bias=np.float32(spec.head.bias_init))


# --- workers: each runs in its own process --------------------------------------------------------


def worker_pe_jax(inputs, config):
  """(one step -> its loss, compiles so far, extra results); runs our trainer's own step."""
  import jax
  import numpy as np
  from flax import nnx

  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, secs, **kw: compiles.append(secs) if event == "/jax/core/compile/backend_compile_duration"
      else None)
  from pe_jax import sharding as sharding_lib
  from pe_jax.training import optimizer as optimizer_lib
  from pe_jax.training.step import TaskLoss, make_train_step
  from pe_jax.training.train import _on_mesh, build_model

  mesh = sharding_lib.make_mesh({"data": 1}, jax.devices()[:1])
  head_specs = [(TASK, dict(config.tasks[TASK].head))]
  model, _, _ = build_model(config, mesh, head_specs)
  head = model.heads[TASK]
  for var, value in ((model.encoder.projection.kernel, inputs["projection_kernel"]),
                     (model.encoder.projection.bias, inputs["projection_bias"]),
                     (head.log_scale, inputs["head_log_scale"]), (head.bias, inputs["head_bias"])):
    var.set_value(jax.device_put(value, var.get_value().sharding))

  schedule = optimizer_lib.learning_rate_schedule(config)
  tx = optimizer_lib.make_optimizer(config.optimizer, schedule)
  graphdef, params = nnx.split(model)
  state = _on_mesh({"step": np.int32(0), "params": params, "opt_state": tx.init(params)}, mesh)
  train_step = make_train_step(graphdef, tx, [TaskLoss(TASK, config.tasks[TASK].loss, in_batch=False)], schedule)
  batch_keys = ("ids", "segments", "positions", "targets", "negatives_valid", "related", "valid", "task_ids",
                "block_scale")
  batch = {k: jax.device_put(inputs[k], sharding_lib.batch_sharding(mesh)) for k in batch_keys}

  def step() -> float:
    nonlocal state
    state, metrics = train_step(state, batch)
    return float(metrics["loss"].block_until_ready())

  def extra(compiles_before_timing: int):
    return {"compile_s": sum(compiles), "compiles": len(compiles),
            "recompiles_while_timed": len(compiles) - compiles_before_timing}

  return step, lambda: len(compiles), extra


def worker_torch(inputs, config):
  """The same (step, compile count, extra) for transformers' BertModel and a hand-written head."""
  import torch
  from transformers import AutoModel

  torch.set_num_threads(os.cpu_count())
  # Dropout off in train mode: our encoder has none, so this is the same function as ours.
  bert = AutoModel.from_pretrained(str(minilm_folder()), hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
  projection = torch.nn.Linear(bert.config.hidden_size, inputs["projection_kernel"].shape[1])
  with torch.no_grad():
    projection.weight.copy_(torch.from_numpy(inputs["projection_kernel"].T.copy()))
    projection.bias.copy_(torch.from_numpy(inputs["projection_bias"]))
  log_scale = torch.nn.Parameter(torch.tensor(float(inputs["head_log_scale"])))
  head_bias = torch.nn.Parameter(torch.tensor(float(inputs["head_bias"])))
  max_scale = config.tasks[TASK].head.get("max_scale", 100.0)
  bert.train()

  params = [*bert.parameters(), *projection.parameters(), log_scale, head_bias]
  opt = config.optimizer
  # Decay for matrices only, as our `decay_mask` does.
  optimizer = torch.optim.AdamW(
      [{"params": [p for p in params if p.ndim >= 2], "weight_decay": opt.weight_decay},
       {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
      lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps)

  n = inputs["targets"].shape[0]
  ids = torch.from_numpy(inputs["torch_ids"].astype("int64"))
  mask = torch.from_numpy(inputs["torch_mask"].astype("int64"))
  targets = torch.from_numpy(inputs["targets"])

  def bce(x, y, t):
    logits = torch.clamp(log_scale.exp(), max=max_scale) * (x * y).sum(-1) + head_bias
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, t)

  def step() -> float:
    optimizer.zero_grad(set_to_none=True)
    # One siamese pass over anchors, positives and negatives together, as our step does.
    hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(projection(pooled), dim=-1, eps=1e-12)
    a, b, neg = emb[:n], emb[n : 2 * n], emb[2 * n :]
    loss = (bce(a, b, targets) + bce(a, neg, torch.zeros_like(targets))) / 2
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, opt.grad_clip_norm)
    optimizer.step()
    return float(loss.detach())

  return step, lambda: 0, lambda _: {"torch_threads": torch.get_num_threads()}




def run_worker(args) -> None:
  import numpy as np

  inputs = dict(np.load(args.inputs))
  config = benchmark_config(args.seq_len, args.batch_size)
  worker = worker_pe_jax if args.worker == "pe_jax" else worker_torch
  step, compile_count, extra = worker(inputs, config)
  losses, times, cpu_times = [], [], []
  for i in range(WARMUP_STEPS + args.steps):
    if i == WARMUP_STEPS:
      compiles_before_timing = compile_count()
    t, c = time.perf_counter(), time.process_time()
    losses.append(step())
    times.append(time.perf_counter() - t)
    cpu_times.append(time.process_time() - c)
  # From the parent's launch of this process: interpreter start-up and imports count, as for a user.
  whole = time.time() - args.launched_at
  timed = times[WARMUP_STEPS:]
  print(json.dumps({
      "whole_process_s": whole,
      "first_step_s": times[0],
      "steady_step_s": float(np.median(timed)),
      "step_s_min_max": [min(timed), max(timed)],
      # CPU seconds of all threads: less sensitive than wall time to other jobs on a shared machine.
      "steady_step_cpu_s": float(np.median(cpu_times[WARMUP_STEPS:])),
      "losses": losses,
      "peak_rss_mb": peak_rss_mb(),
      **extra(compiles_before_timing),
  }))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=10, help="timed steps after the 2 warm-up steps")
  p.add_argument("--batch_size", type=int, default=32, help="(anchor, positive, negative) rows per step")
  p.add_argument("--seq_len", type=int, default=64, help="every text is padded/truncated to this many tokens")
  p.add_argument("--systems", default="pe_jax,torch")
  p.add_argument("--data_dir", default=os.environ.get("PE_JAX_DATA_DIR", str(REPO.parent / "shared" / "data")))
  p.add_argument("--json", help="also write the results here")
  p.add_argument("--worker", choices=("pe_jax", "torch"), help=argparse.SUPPRESS)
  p.add_argument("--inputs", help=argparse.SUPPRESS)
  p.add_argument("--launched_at", type=float, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    return run_worker(args)
  systems = args.systems.split(",")
  unknown = sorted(set(systems) - {"pe_jax", "torch"})
  if unknown or args.steps < 1:
    p.error(f"--systems: unknown {unknown} (known: pe_jax, torch)" if unknown else "--steps must be >= 1")

  inputs = pathlib.Path(tempfile.mkdtemp(prefix="bench_train_")) / "inputs.npz"
  write_inputs(inputs, args.data_dir, args.seq_len, args.batch_size)

  results = {}
  for name in systems:
    cmd = [sys.executable, __file__, "--worker", name, "--inputs", str(inputs), "--steps", str(args.steps),
           "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len),
           "--launched_at", str(time.time())]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
      sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["steady_pairs_per_s"] = args.batch_size / r["steady_step_s"]
    results[name] = r
    print(f"{name:>7}: steady {r['steady_pairs_per_s']:6.1f} pairs/s ({1e3 * r['steady_step_s']:.0f} ms/step, "
          f"min {1e3 * r['step_s_min_max'][0]:.0f} max {1e3 * r['step_s_min_max'][1]:.0f}; "
          f"{1e3 * r['steady_step_cpu_s']:.0f} CPU-ms/step), "
          f"first step {r['first_step_s']:5.1f}s, whole process {r['whole_process_s']:5.1f}s, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB"
          + (f", compile {r['compile_s']:.1f}s ({r['compiles']} programs, "
             f"{r['recompiles_while_timed']} while timed)" if "compile_s" in r else ""), flush=True)

  if {"pe_jax", "torch"} <= results.keys():
    ours, peer = results["pe_jax"], results["torch"]
    results["ratio_pe_jax_vs_torch"] = ratio = {
        "steady_pairs_per_s": ours["steady_pairs_per_s"] / peer["steady_pairs_per_s"],
        "steady_pairs_per_cpu_s": peer["steady_step_cpu_s"] / ours["steady_step_cpu_s"],
        "whole_process_speed": peer["whole_process_s"] / ours["whole_process_s"],
        "first_step_loss_rel_diff": abs(ours["losses"][0] - peer["losses"][0]) / abs(peer["losses"][0]),
        "last_step_loss_rel_diff": abs(ours["losses"][-1] - peer["losses"][-1]) / abs(peer["losses"][-1]),
    }
    print(f"pe_jax / torch: steady pairs/s {ratio['steady_pairs_per_s']:.2f}x (per CPU-second "
          f"{ratio['steady_pairs_per_cpu_s']:.2f}x), whole process "
          f"{ratio['whole_process_speed']:.2f}x faster")
    print(f"first-step loss: pe_jax {ours['losses'][0]:.6f}, torch {peer['losses'][0]:.6f} "
          f"(rel diff {ratio['first_step_loss_rel_diff']:.1e}); after {len(ours['losses'])} steps: "
          f"{ours['losses'][-1]:.6f} vs {peer['losses'][-1]:.6f} (rel diff {ratio['last_step_loss_rel_diff']:.1e})")
  print(f"{args.batch_size} pairs (anchor, positive, negative) x {args.seq_len} tokens per step, "
        f"{WARMUP_STEPS} warm-up + {args.steps} timed steps, {os.cpu_count()} CPU cores")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
