"""Fixed-shape batches: deterministic shuffling by (seed, epoch), padding + weights, device placement.

Every batch has exactly ``batch_size`` rows so a jitted step compiles once; the rows that pad the
last batch carry ``weight == 0`` and target 0, and losses/metrics must weight by it.
"""
import numpy as np

from prorec_jax import sharding


def _rows(examples, idx):
  return dict(history=examples.history[idx], target=examples.target[idx], user=examples.user[idx])


def batch_indices(num, batch_size, seed=0, epoch=0, shuffle=True, drop_remainder=False):
  """Index matrix [num_batches, batch_size]; -1 marks padding rows."""
  order = np.arange(num)
  if shuffle:
    order = np.random.default_rng([seed, epoch]).permutation(num)
  if drop_remainder:
    steps = num // batch_size
    return order[:steps * batch_size].reshape(steps, batch_size)
  steps = -(-num // batch_size)
  padded = np.full(steps * batch_size, -1, np.int64)
  padded[:num] = order
  return padded.reshape(steps, batch_size)


def gather(examples, idx):
  """A padded batch for one row of ``batch_indices``."""
  valid = idx >= 0
  b = _rows(examples, np.where(valid, idx, 0))
  b["history"] = np.where(valid[:, None], b["history"], 0)
  b["target"] = np.where(valid, b["target"], 0)
  b["weight"] = valid.astype(np.float32)
  return b


def epoch_arrays(examples, batch_size, seed=0, epoch=0, shuffle=True, drop_remainder=False):
  """A whole epoch stacked as [num_steps, batch_size, ...], ready for an on-device ``lax.scan``."""
  idx = batch_indices(len(examples), batch_size, seed, epoch, shuffle, drop_remainder)
  flat = gather(examples, idx.reshape(-1))
  return {k: v.reshape(idx.shape + v.shape[1:]) for k, v in flat.items()}


def iterate(examples, batch_size, seed=0, epoch=0, shuffle=True, drop_remainder=False, mesh=None):
  """Yields batches; with a mesh they are placed with the ``data`` sharding."""
  if mesh is not None:
    sharding.check_batch_size(batch_size, mesh)
  for idx in batch_indices(len(examples), batch_size, seed, epoch, shuffle, drop_remainder):
    b = gather(examples, idx)
    yield sharding.shard_batch(b, mesh) if mesh is not None else b


def bucket_widths(buckets, max_history):
  """``generate.optim.history_buckets`` as sorted widths ending at ``max_history``; () -> one."""
  widths = sorted({int(w) for w in buckets} | {int(max_history)})
  if widths[0] < 1 or widths[-1] > max_history:
    raise ValueError(f"history_buckets must lie in 1..max_history={max_history}, got "
                     f"{tuple(buckets)}")
  return tuple(widths)


def bucketed_batch_indices(lengths, widths, batch_size, seed=0, epoch=0):
  """Batches of rows whose history fits one width: (index [S, B] with -1 padding, bucket [S]).

  Row ``i`` goes to the narrowest width >= ``lengths[i]``; each bucket is shuffled and cut into
  batches (its last one padded), then all batches are shuffled together, so widths stay mixed
  over the epoch. Deterministic in (seed, epoch).
  """
  lengths = np.asarray(lengths)
  if lengths.size and lengths.max() > widths[-1]:
    raise ValueError(f"a history of {lengths.max()} items exceeds the widest bucket {widths[-1]}")
  rng = np.random.default_rng([seed, epoch])
  which = np.searchsorted(np.asarray(widths), lengths)
  index, bucket = [], []
  for b in range(len(widths)):
    rows = rng.permutation(np.flatnonzero(which == b))
    if rows.size:
      steps = -(-rows.size // batch_size)
      padded = np.full(steps * batch_size, -1, np.int64)
      padded[:rows.size] = rows
      index.append(padded.reshape(steps, batch_size))
      bucket.append(np.full(steps, b, np.int32))
  if not index:
    return np.zeros((0, batch_size), np.int64), np.zeros((0,), np.int32)
  index, bucket = np.concatenate(index), np.concatenate(bucket)
  order = rng.permutation(len(index))
  return index[order], bucket[order]
