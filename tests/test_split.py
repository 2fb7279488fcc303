import jax
import numpy as np
import pytest

from prorec_jax import sharding
from prorec_jax.data import batching
from prorec_jax.data import split as split_lib


def _random_sequences(seed=0, users=50, items=40):
  rng = np.random.default_rng(seed)
  return [rng.choice(np.arange(1, items + 1), rng.integers(3, 30), replace=False).astype(np.int32)
          for _ in range(users)]


def test_leave_one_out_targets_and_histories():
  seqs = _random_sequences()
  s = split_lib.leave_one_out(seqs, max_history=5)
  for u, seq in enumerate(seqs):
    assert s.test.target[u] == seq[-1] and s.valid.target[u] == seq[-2]
    np.testing.assert_array_equal(s.test.history[u][s.test.history[u] > 0], seq[:-1][-5:])
    np.testing.assert_array_equal(s.valid.history[u][s.valid.history[u] > 0], seq[:-2][-5:])
    rows = np.flatnonzero(s.train.user == u)
    # Training covers exactly positions 1..n-3: never the validation or test position.
    assert len(rows) == len(seq) - 3
    for t, r in enumerate(rows, start=1):
      assert s.train.target[r] == seq[t]
      hist = s.train.history[r][s.train.history[r] > 0]
      np.testing.assert_array_equal(hist, seq[max(0, t - 5):t])  # only earlier items


def test_history_is_left_padded_and_truncated():
  s = split_lib.leave_one_out([np.arange(1, 31, dtype=np.int32)], max_history=20)
  np.testing.assert_array_equal(s.test.history[0], np.arange(10, 30))
  short = split_lib.leave_one_out([np.array([7, 8, 9], np.int32)], max_history=4)
  np.testing.assert_array_equal(short.test.history[0], [0, 0, 7, 8])
  assert len(short.train) == 0


def test_leave_one_out_rejects_short_users():
  with pytest.raises(ValueError, match="at least 3"):
    split_lib.leave_one_out([np.array([1, 2], np.int32)])


def test_batches_cover_every_example_once_with_padding():
  s = split_lib.leave_one_out(_random_sequences(), max_history=8)
  n, bs = len(s.train), 64
  seen = []
  batches = list(batching.iterate(s.train, bs, seed=3, epoch=1))
  for b in batches:
    assert b["history"].shape == (bs, 8) and b["target"].shape == (bs,)
    assert b["weight"].dtype == np.float32
    pad = b["weight"] == 0
    assert (b["target"][pad] == 0).all() and (b["history"][pad] == 0).all()
    seen += list(zip(b["user"][~pad], b["target"][~pad]))
  assert len(seen) == n and len(batches) == -(-n // bs)
  assert sorted(seen) == sorted(zip(s.train.user, s.train.target))


def test_shuffle_is_deterministic_by_seed_and_epoch():
  a = batching.batch_indices(100, 16, seed=1, epoch=0)
  np.testing.assert_array_equal(a, batching.batch_indices(100, 16, seed=1, epoch=0))
  assert not np.array_equal(a, batching.batch_indices(100, 16, seed=1, epoch=1))
  assert not np.array_equal(a, batching.batch_indices(100, 16, seed=2, epoch=0))
  np.testing.assert_array_equal(batching.batch_indices(10, 4, shuffle=False)[-1], [8, 9, -1, -1])
  assert batching.batch_indices(10, 4, drop_remainder=True).shape == (2, 4)


def test_epoch_arrays_match_iterate():
  s = split_lib.leave_one_out(_random_sequences(), max_history=8)
  stacked = batching.epoch_arrays(s.train, 32, seed=5, epoch=2)
  for i, b in enumerate(batching.iterate(s.train, 32, seed=5, epoch=2)):
    for k in b:
      np.testing.assert_array_equal(stacked[k][i], b[k])


def test_batches_are_sharded_over_data_axis():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  s = split_lib.leave_one_out(_random_sequences(), max_history=8)
  b = next(batching.iterate(s.train, 16, mesh=mesh))
  assert b["history"].sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(b["history"].addressable_shards) == 8
  assert b["history"].addressable_shards[0].data.shape == (2, 8)
  with pytest.raises(ValueError, match="not divisible"):
    next(batching.iterate(s.train, 12, mesh=mesh))


def test_mesh_model_axis():
  mesh = sharding.make_mesh(model_parallel=2)
  assert dict(mesh.shape) == {"data": 4, "model": 2}
  with pytest.raises(ValueError):
    sharding.make_mesh(model_parallel=3)


def test_bucketed_batches_cover_each_row_once_within_its_width():
  lengths = np.random.default_rng(0).integers(1, 21, 1000)
  widths = batching.bucket_widths((4, 12), 20)
  assert widths == (4, 12, 20)
  index, bucket = batching.bucketed_batch_indices(lengths, widths, 32, seed=1, epoch=2)
  real = index[index >= 0]
  assert sorted(real) == list(range(1000))
  for row, b in zip(index, bucket):
    fill = lengths[row[row >= 0]]
    assert fill.max() <= widths[b] and (b == 0 or fill.min() > widths[b - 1])
  # one padded batch per bucket at most, and widths mixed over the epoch rather than in runs
  assert (index < 0).any(axis=1).sum() <= len(widths)
  assert len(set(bucket[:10])) > 1
  again = batching.bucketed_batch_indices(lengths, widths, 32, seed=1, epoch=2)
  np.testing.assert_array_equal(again[0], index)
  assert not np.array_equal(batching.bucketed_batch_indices(lengths, widths, 32, 1, 3)[0], index)


def test_bucket_widths_rejects_widths_outside_the_history():
  assert batching.bucket_widths((), 20) == (20,)
  assert batching.bucket_widths((20, 8, 8), 20) == (8, 20)
  for bad in ((0,), (21,)):
    with pytest.raises(ValueError, match="history_buckets"):
      batching.bucket_widths(bad, 20)
  with pytest.raises(ValueError, match="exceeds the widest bucket"):
    batching.bucketed_batch_indices([3, 25], (4, 20), 8)
