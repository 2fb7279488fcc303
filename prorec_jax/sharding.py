"""Device mesh and shardings: the one module that knows the hardware.

Mesh axes: ``data`` (batch) and ``model`` (e.g. a large item table). Batches shard their leading
axis over ``data``; parameters are replicated unless a stage asks otherwise.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(model_parallel=1, devices=None):
  devices = jax.devices() if devices is None else devices
  n = len(devices)
  if n % model_parallel:
    raise ValueError(f"{n} devices cannot be split into model_parallel={model_parallel}")
  grid = np.asarray(devices).reshape(n // model_parallel, model_parallel)
  return Mesh(grid, ("data", "model"))


def data_sharding(mesh):
  """Leading (batch) axis split over ``data``, the rest replicated."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_size(mesh):
  return mesh.shape["data"]


def check_batch_size(batch_size, mesh):
  n = data_size(mesh)
  if batch_size % n:
    raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of mesh axis "
                     f"'data'; pick a multiple of {n}")


def shard_batch(batch, mesh):
  """Places a host batch (pytree of arrays with a leading batch axis) across ``data``."""
  check_batch_size(len(jax.tree.leaves(batch)[0]), mesh)
  return jax.device_put(batch, data_sharding(mesh))
