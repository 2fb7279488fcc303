"""Constrained beam search vs the exhaustive scorer, dead beams, metrics, bad input."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prorec_jax import artifacts
from prorec_jax import decode
from prorec_jax import metrics
from prorec_jax import seq2seq

K, H = 6, 5


def _setup(n, seed=0):
  flat = np.random.default_rng(seed).choice(K * K, n, replace=False)
  codes_NxL = np.stack([flat // K, flat % K], 1).astype(np.int32)
  tables = decode.build_trie(codes_NxL, K)
  tok = seq2seq.token_table(np.concatenate([[[-1, -1]], codes_NxL]), K)
  model = seq2seq.Seq2Seq(num_levels=2, k=K, max_history=H, width=16, num_heads=2, mlp_width=32,
                          num_encoder_layers=1, num_decoder_layers=1, dropout=0.0)
  params = seq2seq.init_params(model, seed, jnp.asarray(tok))
  # larger logits than at init, so the ranking is far from uniform
  params = jax.tree.map(lambda x: x * 4.0, params)
  return model, params, tok, tables, codes_NxL


def test_beam_search_equals_exhaustive_and_emits_only_existing_codes():
  n = 20
  model, params, tok, tables, codes = _setup(n)
  hist = np.random.default_rng(1).integers(0, n + 1, (8, H)).astype(np.int32)
  hist[:, -1] = np.arange(1, 9)
  # beam >= every level's prefix count (here <= K): the search is exact, so it must equal the
  # exhaustive top-k, ties aside
  search = decode.make_recommender(model, beam=8, topk=5)
  items, logp = decode.recommend(search, params, hist, tok, tables["child"], 8, n)
  ex_items, ex_logp = decode.exhaustive_topk(model, params, jnp.asarray(hist), jnp.asarray(tok), 5)
  np.testing.assert_array_equal(items, ex_items)
  np.testing.assert_allclose(logp, ex_logp, atol=1e-4)
  assert ((items >= 1) & (items <= n)).all()
  assert all(len(set(r)) == len(r) for r in items)
  assert (np.diff(logp, axis=1) <= 1e-6).all()


def test_dead_beams_are_never_returned():
  n = 5  # fewer items than the beam: three beams die at the last level
  model, params, tok, tables, _ = _setup(n, seed=2)
  hist = np.array([[0, 0, 0, 1, 2], [0, 0, 3, 4, 5]], np.int32)
  items, logp = decode.make_recommender(model, beam=8, topk=8)(
      params, hist, jnp.asarray(tok), jnp.asarray(tables["child"]))
  items, logp = np.asarray(items), np.asarray(logp)
  for r in range(2):
    assert sorted(items[r, :n].tolist()) == [1, 2, 3, 4, 5]
    assert (items[r, n:] == 0).all() and np.isneginf(logp[r, n:]).all()


def test_metrics_hand_computed():
  topk = np.array([[3, 1, 2, 9, 8], [4, 5, 6, 7, 1], [1, 2, 3, 4, 5]])
  target = np.array([1, 7, 10])
  m = metrics.from_topk(topk, target, ks=(1, 5))
  assert m["recall@1"] == 0.0
  assert m["recall@5"] == pytest.approx(2 / 3)
  assert m["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / 3)


def test_bad_input_errors(tmp_path):
  with pytest.raises(ValueError, match="smaller than the largest k"):
    decode.check_beam(10, 20, 100)
  with pytest.raises(ValueError, match="catalog has 5"):
    decode.check_beam(20, 20, 5)
  with pytest.raises(ValueError, match="outside 1..5"):
    decode.check_histories(np.array([[0, 6]]), 5)
  with pytest.raises(ValueError, match="empty"):
    decode.check_histories(np.array([[1, 2], [0, 0]]), 5)
  with pytest.raises(FileNotFoundError, match="--stage=codes"):
    decode.load_code_tables(str(tmp_path), 5)
  codes = np.array([[-1, -1], [0, 1], [1, 0], [1, 1]], np.int32)
  artifacts.save_npy(os.path.join(tmp_path, "codes", "codes.npy"), codes)
  with pytest.raises(ValueError, match="5 items"):
    decode.load_code_tables(str(tmp_path), 5)
  got, tables, k = decode.load_code_tables(str(tmp_path), 3)  # no tables file: built from codes
  assert k == 2 and got.shape == (4, 2) and tables["child"].shape[0] == 2
  artifacts.save_npy(os.path.join(tmp_path, "codes", "codes.npy"), codes[[0, 1, 1, 3]])
  with pytest.raises(RuntimeError, match="share a code"):
    decode.load_code_tables(str(tmp_path), 3)
