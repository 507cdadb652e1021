"""Fixtures for the trainer tests: smoke configs on the staged data (`shared_data_dir` of
tests/conftest.py), one shared finished smoke run, and the `cpu_devices(n)` marker.

`@pytest.mark.cpu_devices(n)` runs a test in a child pytest whose jax was started with n fake CPU
devices (XLA_FLAGS must be set before jax is imported, and this process's jax already has one).
The child shares this session's compilation cache and prepared datasets through the environment.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.data.examples import LabeledTexts
from pe_jax.models import pretrained
from pe_jax.models.encoder import Encoder, EncoderConfig
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.tasks.pairs import LabelingPairs
from pe_jax.tokenization import TextTokenizer
from pe_jax.training.train import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[2]
CHILD_DEVICES_ENV = "PE_JAX_TEST_CPU_DEVICES"  # set in a child: the device count it was started with
CHILD_TIMEOUT_S = 600


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "cpu_devices(n): run in a child process whose jax has n fake CPU devices")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
  """Reruns a `cpu_devices(n)` test as `pytest <node id>` in a child with n devices; its result is the child's."""
  marker = pyfuncitem.get_closest_marker("cpu_devices")
  if marker is None:
    return None
  n = marker.args[0]
  if jax.device_count() >= n:
    return None  # the child itself, or a host that really has n devices: run the test here
  if os.environ.get(CHILD_DEVICES_ENV):
    pytest.fail(f"child started with XLA_FLAGS for {n} CPU devices sees {jax.device_count()}")
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
  env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", CHILD_DEVICES_ENV: str(n)}
  with tempfile.TemporaryDirectory() as basetemp:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", f"--basetemp={basetemp}"],
        cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
  if proc.returncode != 0:
    pytest.fail(f"failed in a child process with {n} CPU devices (rc {proc.returncode}):\n"
                f"{proc.stdout[-12000:]}\n{proc.stderr[-3000:]}", pytrace=False)
  return True


def load_multitask_config(arg: str = "smoke") -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("multitask_config", REPO / "configs" / "multitask.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="session")
def base_config() -> Callable[[], ml_collections.ConfigDict]:
  """A fresh `configs/multitask.py:smoke` on each call, with no data folders set (no data needed)."""
  return load_multitask_config


@pytest.fixture(scope="session")
def smoke_config(base_config, shared_data_dir, tfds_dir) -> Callable[[], ml_collections.ConfigDict]:
  """A fresh smoke config on each call, reading the staged data and the session's tfds dir."""

  def make() -> ml_collections.ConfigDict:
    config = base_config()
    config.data_dir = str(shared_data_dir)
    config.tfds_dir = str(tfds_dir)
    return config

  return make


TINY_ENCODER = dict(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                    max_position_embeddings=32, max_seq_length=16, projection_dim=8)


@pytest.fixture(scope="session")
def tiny_model():
  """`make(head_specs) -> (graphdef, params)`: a PostEmbeddingModel with a 1-layer, 16-wide encoder
  (vocabulary 50, 8-d output) whose parameters are seeded random normals. Built abstractly, since
  op-by-op eager initialisation costs seconds on a busy CPU."""
  def make(head_specs, seed: int = 0):
    def build():
      rngs = nnx.Rngs(0)
      return PostEmbeddingModel(Encoder(EncoderConfig(**TINY_ENCODER), rngs=rngs), head_specs, rngs=rngs)

    with sharding_lib.activate(sharding_lib.single_device_mesh()):
      graphdef, abstract = nnx.split(nnx.eval_shape(build))
    rng = np.random.default_rng(seed)
    return graphdef, jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, size=s.shape), s.dtype), abstract)

  return make


@pytest.fixture(scope="session")
def short_config(smoke_config) -> Callable[..., ml_collections.ConfigDict]:
  """`make(**changes)`: the smoke recipe cut short: 4 steps, no evaluation, a checkpoint every 2,
  posts cut at 16 tokens (short packed rows: a step program or two to compile, each quick)."""

  def make(**changes) -> ml_collections.ConfigDict:
    config = smoke_config()
    config.update({"total_steps": 4, "eval_every": 0, "checkpoint_every": 2, **changes})
    config.model.encoder.max_seq_length = 16
    return config

  return make


COLORS = ("red", "green", "blue")


@pytest.fixture(scope="session")
def labeling_task():
  """`make(name, n=30) -> LabelingPairs` whose texts name the task and the label: "alpha red 7"."""
  def make(name: str, n: int = 30) -> LabelingPairs:
    labels = np.arange(n) % len(COLORS)
    return LabelingPairs(LabeledTexts(name, [f"{name} {COLORS[c]} {i}" for i, c in enumerate(labels)],
                                      np.eye(len(COLORS), dtype=bool)[labels], COLORS))

  return make


@pytest.fixture(scope="session")
def minilm_tokenizer():
  """The smoke model's tokenizer (MiniLM's WordPiece), truncating at 64 tokens."""
  return TextTokenizer(pretrained.resolve("minilm-l6").tokenizer, max_length=64, pad_id=0)


@dataclasses.dataclass(frozen=True)
class SmokeRun:
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  results: dict[str, float]


@pytest.fixture(scope="session")
def smoke_run(smoke_config, tmp_path_factory, compilation_cache) -> SmokeRun:
  """The full smoke recipe (30 steps, eval at 15 and 30), run once; tests must not modify it."""
  config = smoke_config()
  workdir = tmp_path_factory.mktemp("smoke") / "workdir"
  results = train_and_evaluate(config, workdir)
  return SmokeRun(workdir, config, results)
