"""Meshes and the logical-axis rules that place every weight and batch on it.

Model code names logical axes only; these rules decide where they live, so the same model runs on one
CPU, 8 GPUs or a TPU slice by changing `config.mesh` alone.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis. Vocabulary rows stay whole: 250,037 (XLM-R) divides by nothing useful.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("proj", None),
)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh. A -1 entry takes the devices left over; None puts everything on data."""
  devices = list(devices if devices is not None else jax.devices())
  shape = dict(shape or {"data": -1})
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
  sizes = [shape.get(a, 1) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % fixed:
      raise ValueError(f"mesh {shape} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // fixed
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  return jax.make_mesh(
      tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices)


def single_device_mesh(device: jax.Device | None = None) -> jax.sharding.Mesh:
  return make_mesh({"data": 1}, [device or jax.devices()[0]])


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[None]:
  """The context under which sharded variables are created (Flax shards them eagerly)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every data-parallel axis."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]
