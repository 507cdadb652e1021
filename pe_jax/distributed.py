"""Joining a multi-process JAX job: a GPU cluster, a TPU pod slice, or CPU processes on one host.

Every process runs the same command; `initialize` must come before anything touches a device. The
settings come from flags, else the environment, else (with `auto=True`) jax's own cluster detection:

  JAX_COORDINATOR_ADDRESS  host:port of process 0 (jax reads this one itself too)
  JAX_NUM_PROCESSES        how many processes the job has
  JAX_PROCESS_ID           this process's index, 0 .. JAX_NUM_PROCESSES - 1
  auto=True                TPU pod slices, SLURM and Open MPI say all three themselves

A job of one process (nothing set) initialises nothing, so single-host commands run unchanged.
"""

from __future__ import annotations

import dataclasses
import os

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False  # let jax detect the cluster (TPU pod slice, SLURM, Open MPI)

  @property
  def multi_process(self) -> bool:
    return self.auto or (self.num_processes or 1) > 1


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, *, auto: bool = False,
            environ: dict[str, str] | None = None) -> DistributedSettings:
  """Flags first, then the environment; errors name the setting that is missing or wrong."""
  env = os.environ if environ is None else environ

  def env_int(name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
      return None
    try:
      return int(value)
    except ValueError:
      raise ValueError(f"${name}={value!r} is not an integer") from None

  s = DistributedSettings(
      coordinator_address or env.get(COORDINATOR_ENV) or None,
      num_processes if num_processes is not None else env_int(NUM_PROCESSES_ENV),
      process_id if process_id is not None else env_int(PROCESS_ID_ENV),
      auto)
  if s.auto:
    return s  # jax fills in what is unset, and says what it could not find
  if s.num_processes is not None and s.num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {s.num_processes}")
  if not s.multi_process:
    if s.process_id not in (None, 0):
      raise ValueError(f"process_id {s.process_id} given for a job of one process")
    return s
  missing = [name for name, value in (("coordinator address (--coordinator_address or $" + COORDINATOR_ENV + ")",
                                       s.coordinator_address),
                                      ("process id (--process_id or $" + PROCESS_ID_ENV + ")", s.process_id))
             if value is None]
  if missing:
    raise ValueError(f"a job of {s.num_processes} processes needs the {' and the '.join(missing)}; "
                     f"or pass auto detection on a TPU pod, SLURM or Open MPI")
  if not 0 <= s.process_id < s.num_processes:
    raise ValueError(f"process_id {s.process_id} is outside [0, {s.num_processes})")
  return s


def initialize(settings: DistributedSettings) -> bool:
  """Joins the job `settings` describe; returns whether it has more than one process."""
  if not settings.multi_process:
    return False
  import jax

  # CPU processes talk over gloo (jax's default; the choice must be made before the backend starts).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(settings.coordinator_address, settings.num_processes, settings.process_id)
  return jax.process_count() > 1


def define_flags():
  """The CLI flags --coordinator_address, --num_processes, --process_id, --distributed_auto."""
  from absl import flags

  return (
      flags.DEFINE_string("coordinator_address", None, f"host:port of process 0 (default ${COORDINATOR_ENV})."),
      flags.DEFINE_integer("num_processes", None, f"Processes in the job (default ${NUM_PROCESSES_ENV}, else 1)."),
      flags.DEFINE_integer("process_id", None, f"This process's index (default ${PROCESS_ID_ENV})."),
      flags.DEFINE_bool("distributed_auto", False, "Let jax detect the job (TPU pod slice, SLURM, Open MPI)."),
  )


def initialize_from_flags(flag_holders) -> bool:
  """`initialize(resolve(...))` from the holders `define_flags` returned."""
  address, num, pid, auto = (f.value for f in flag_holders)
  return initialize(resolve(address, num, pid, auto=auto))
