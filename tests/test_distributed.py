"""Settings of a multi-process job from flags and the environment (`pe_jax.distributed`)."""

import pytest

from pe_jax import distributed


def test_one_process_needs_nothing_and_initialises_nothing():
  settings = distributed.resolve(environ={})
  assert not settings.multi_process
  assert distributed.initialize(settings) is False  # a real initialize would need a coordinator


def test_the_environment_fills_what_flags_leave_unset():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert distributed.resolve(environ=env) == distributed.DistributedSettings("10.0.0.1:1234", 4, 3)
  # Flags win over the environment.
  assert distributed.resolve("h:1", 2, 1, environ=env) == distributed.DistributedSettings("h:1", 2, 1)


def test_auto_detection_leaves_the_rest_to_jax():
  settings = distributed.resolve(auto=True, environ={})
  assert settings.multi_process and settings.coordinator_address is None


@pytest.mark.parametrize("kwargs, env, message", [
    (dict(num_processes=2, process_id=0), {}, r"2 processes needs the coordinator address \(--coordinator_address"),
    (dict(coordinator_address="h:1", num_processes=2), {}, r"needs the process id \(--process_id or \$JAX_PROCESS_ID\)"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {}, r"process_id 2 is outside \[0, 2\)"),
    (dict(process_id=1), {}, r"process_id 1 given for a job of one process"),
    (dict(num_processes=0), {}, r"num_processes must be >= 1"),
    ({}, {"JAX_NUM_PROCESSES": "two"}, r"\$JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_incomplete_settings_name_what_is_missing(kwargs, env, message):
  with pytest.raises(ValueError, match=message):
    distributed.resolve(**kwargs, environ=env)
