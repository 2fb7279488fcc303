"""Codes stage: unique hierarchical codes, padding rule, prefix tables, quantisers, bad input."""
import itertools
import os

import numpy as np
import pytest

from configs import prorec
from prorec_jax import artifacts
from prorec_jax import codes
from prorec_jax import quantizers
from prorec_jax.data import stage as data_stage


def _config(**codes_fields):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.codes.update(codes_fields)
  return c


def _fake_upstream(wd, x, stage="align", name="integrated"):
  """Writes an upstream embedding (row 0 = padding) and marks its stage done."""
  x = np.concatenate([np.zeros((1, x.shape[1]), np.float32), x.astype(np.float32)])
  path = "semantic.npy" if stage == "embed" else f"{name}.npy"
  artifacts.save_npy(os.path.join(wd, stage, path), x)
  artifacts.mark_done(wd, stage, f"fake-{stage}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("codes"))
  data_stage.run(_config(), wd)
  n = artifacts.load_json(os.path.join(wd, "data", "stats.json"))["num_items"]
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(6, 24)) * 3
  _fake_upstream(wd, centers[rng.integers(0, 6, n)] + rng.normal(size=(n, 24)))
  _fake_upstream(wd, rng.normal(size=(n, 40)), stage="embed")
  return wd


def _accepted_codes(tables):
  """Every code the trie accepts, by exhaustive walk (small k and L only)."""
  depth, k = tables["child"].shape[0], int(tables["k"])
  all_codes = np.array(list(itertools.product(range(k), repeat=depth)))
  items = codes.walk(tables, all_codes)
  return all_codes[items > 0], items[items > 0]


@pytest.mark.parametrize("method", ["hkm", "random", "rkmeans", "rqvae"])
def test_stage_writes_unique_codes_and_matching_tables(workdir, method):
  c = _config(method=method)
  if method == "rqvae":
    with c.unlocked():
      c.codes.levels = 2
      c.codes.rqvae.update(epochs=5, batch_size=64)
  codes.run(c, workdir)
  out = os.path.join(workdir, "codes")
  table = np.load(os.path.join(out, codes.CODES))
  n = artifacts.load_json(os.path.join(workdir, "data", "stats.json"))["num_items"]
  assert table.dtype == np.int32 and table.shape[0] == n + 1
  assert (table[0] == -1).all()
  assert table[1:].min() >= 0 and table[1:].max() < c.codes.k
  assert len(np.unique(table[1:], axis=0)) == n
  tables = codes.load_tables(workdir)
  np.testing.assert_array_equal(codes.walk(tables, table[1:]), np.arange(1, n + 1))
  accepted, items = _accepted_codes(tables)  # nothing but the item codes is accepted
  assert len(accepted) == n
  np.testing.assert_array_equal(table[items], accepted)
  np.testing.assert_array_equal(tables["valid"], tables["child"] >= 0)
  np.testing.assert_array_equal(tables["item"], np.maximum(tables["child"][-1], 0))
  stats = artifacts.load_json(os.path.join(out, codes.STATS))
  assert stats["method"] == method and stats["shared_codes"] == 0
  assert stats["code_length"] == table.shape[1]


def test_rerun_skips_and_config_change_redoes(workdir):
  codes.run(_config(), workdir)
  path = os.path.join(workdir, "codes", codes.CODES)
  first = os.stat(path).st_mtime_ns
  codes.run(_config(), workdir)
  assert os.stat(path).st_mtime_ns == first
  codes.run(_config(k=8), workdir)
  assert np.load(path)[1:].max() < 8


def test_semantic_input_reads_the_embed_stage(workdir):
  codes.run(_config(input="semantic"), workdir)
  stats = artifacts.load_json(os.path.join(workdir, "codes", codes.STATS))
  assert stats["input"] == "semantic"


def test_hkm_same_seed_same_codes():
  x = np.random.default_rng(1).normal(size=(700, 8))
  a, _ = codes.hierarchical_kmeans(x, 16, seed=3)
  b, _ = codes.hierarchical_kmeans(x, 16, seed=3)
  np.testing.assert_array_equal(a, b)


def test_hkm_unique_with_many_identical_embeddings():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(800, 6))
  x[:500] = x[0]  # 500 copies of one point, more than k * k
  x[500:520] = x[600]
  c, info = codes.hierarchical_kmeans(x, 8)
  assert len(np.unique(c, axis=0)) == len(x)
  assert info["fallback_splits"] > 0
  tables = codes.build_tables(c, 8)
  np.testing.assert_array_equal(codes.walk(tables, c), np.arange(1, len(x) + 1))


def test_hkm_rejects_bad_k_and_nan():
  with pytest.raises(ValueError, match="k must be >= 2"):
    codes.hierarchical_kmeans(np.ones((10, 2)), 1)
  with pytest.raises(ValueError, match="NaN"):
    codes.hierarchical_kmeans(np.full((10, 2), np.nan), 4)


def test_all_identical_and_fewer_items_than_k():
  c, _ = codes.hierarchical_kmeans(np.ones((100, 3)), 4)
  assert len(np.unique(c, axis=0)) == 100 and c.max() < 4
  c, info = codes.hierarchical_kmeans(np.random.default_rng(0).normal(size=(5, 3)), 16)
  assert c.shape == (5, 1) and info["depth"] == 1
  np.testing.assert_array_equal(c[:, 0], np.arange(5))


def test_padding_rule_puts_zeros_between_path_and_leaf_index():
  # k=2: {0, 0.1} is a leaf at level 1; {100, 100.1, 100.2} splits once more, so L = 3.
  x = np.array([[0.0], [0.1], [100.0], [100.1], [100.2]])
  c, info = codes.hierarchical_kmeans(x, 2)
  assert info["depth"] == 3
  assert c[0, 0] == c[1, 0] != c[2, 0]
  np.testing.assert_array_equal(c[:2, 1:], [[0, 0], [0, 1]])  # padding zero, then leaf index
  assert len(np.unique(c, axis=0)) == 5


def test_tables_reject_prefix_of_other_lengths_and_out_of_range():
  c = np.array([[0, 1], [0, 2], [3, 0]])
  t = codes.build_tables(c, 4)
  np.testing.assert_array_equal(t["num_prefixes"], [1, 2])
  np.testing.assert_array_equal(codes.walk(t, [[0, 1], [3, 0], [0, 3], [1, 0], [0, 4], [-1, 0]]),
                                [1, 3, 0, 0, 0, 0])
  assert t["valid"][0, 0].tolist() == [True, False, False, True]


def test_collision_suffix_and_random_codes():
  base = np.array([[1, 2], [1, 2], [0, 0], [1, 2]])
  out, info = quantizers.add_collision_suffix(base, 4)
  np.testing.assert_array_equal(out[:, -1], [0, 1, 0, 2])
  assert info["collisions"] == 2 and info["suffix_tokens"] == 1
  out, info = quantizers.add_collision_suffix(np.zeros((16, 1), np.int32), 4)  # > k collide
  assert info["suffix_tokens"] == 2 and len(np.unique(out, axis=0)) == 16
  assert quantizers.add_collision_suffix(np.zeros((17, 1), np.int32), 4)[1]["suffix_tokens"] == 3
  r, info = quantizers.random_codes(300, 16, seed=0)
  assert r.shape == (300, 3) and len(np.unique(r, axis=0)) == 300
  np.testing.assert_array_equal(r, quantizers.random_codes(300, 16, seed=0)[0])


def test_bad_input(tmp_path):
  wd = str(tmp_path)
  data_stage.run(_config(), wd)
  n = artifacts.load_json(os.path.join(wd, "data", "stats.json"))["num_items"]
  x = np.random.default_rng(0).normal(size=(n, 4))
  x[6, 2] = np.nan
  _fake_upstream(wd, x)
  with pytest.raises(ValueError, match=r"NaN or inf in 1 item rows \(items \[7\]"):
    codes.run(_config(), wd)
  _fake_upstream(wd, x[:-3])
  with pytest.raises(ValueError, match="expected"):
    codes.run(_config(), wd)
  _fake_upstream(wd, np.nan_to_num(x))
  with pytest.raises(ValueError, match="codes.k must be >= 2"):
    codes.run(_config(k=1), wd)
  with pytest.raises(ValueError, match="codes.method"):
    codes.run(_config(method="pq"), wd)
  with pytest.raises(FileNotFoundError, match="stage=align"):
    codes.run(_config(input="collaborative"), wd)


def test_level_split_into_size_classes_when_one_call_is_too_big():
  sizes = [5000, 300, 280, 260, 1000]
  calls = codes._batches(sizes, max_points=4096)
  seen = np.concatenate([idx for idx, _ in calls])
  assert sorted(seen.tolist()) == list(range(len(sizes)))
  for idx, npad in calls:
    assert all(sizes[i] <= npad for i in idx)
    assert len(idx) == 1 or len(idx) * npad <= 4096
  (idx, npad), = codes._batches(sizes, 1 << 20, compile_points=1e6)  # compiles cost more than
  assert sorted(idx.tolist()) == list(range(5)) and npad >= 5000  # padding: one call
  split = codes._batches([2000] * 10 + [300] * 100, 1 << 20, compile_points=1000)
  assert [len(i) for i, _ in split] == [10, 100]  # padding 300s to 2048 would cost more
  x = np.random.default_rng(5).normal(size=(900, 4))
  c, info = codes.hierarchical_kmeans(x, 8, max_floats=4 * 300)  # forces several calls per level
  assert len(np.unique(c, axis=0)) == 900 and info["kmeans_calls"] > info["depth"] - 1
