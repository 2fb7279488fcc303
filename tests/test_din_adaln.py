"""DIN, AdaLN/MAL and InfoNCE properties."""
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from prorec_jax import adaln
from prorec_jax import contrastive
from prorec_jax import din as din_lib

N, D = 30, 16


def _din(**kw):
  model = din_lib.DIN(N, D, 4, (8, 4), **kw)
  hist = jnp.array([[0, 0, 3, 4, 5], [0, 0, 0, 0, 7]])
  cands = jnp.array([1, 2, 9])
  params = model.init(jax.random.key(0), hist, cands)
  # Make row 0 (padding) non-zero so any leak of padded slots would show.
  table = params["params"]["items"]["embedding"]
  params["params"]["items"]["embedding"] = table.at[0].set(5.0)
  return model, params, hist, cands


@pytest.mark.parametrize("softmax", [False, True])
def test_extra_padding_does_not_change_scores(softmax):
  model, params, hist, cands = _din(attention_softmax=softmax)
  more = jnp.concatenate([jnp.zeros((2, 7), hist.dtype), hist], axis=1)
  np.testing.assert_allclose(model.apply(params, hist, cands), model.apply(params, more, cands),
                             rtol=1e-6, atol=1e-6)


def test_attention_ignores_padded_slots():
  model, params, hist, cands = _din()
  w = model.apply(params, hist, cands, method="attention")
  assert w.shape == (2, 3, 5)
  assert (w[0, :, :2] == 0).all() and (w[1, :, :4] == 0).all()
  assert (w[0, :, 2:] != 0).all()
  # The padding row's embedding has no influence on any score.
  def score_sum(table):
    p = {"params": dict(params["params"], items={"embedding": table})}
    return model.apply(p, hist, cands).sum()
  grad = jax.grad(score_sum)(params["params"]["items"]["embedding"])
  assert float(jnp.abs(grad[0]).max()) == 0.0


def test_score_is_attention_weighted_dot_product():
  """s(u, e) = sum_j a_j(e) <W h_j, e>."""
  model, params, hist, cands = _din()
  table = params["params"]["items"]["embedding"]
  w = model.apply(params, hist, cands, method="attention")
  out = params["params"]["interest_out"]["kernel"]
  expected = np.einsum("ecl,eld,df,cf->ec", w, table[hist], out, table[cands])
  np.testing.assert_allclose(model.apply(params, hist, cands), expected, rtol=1e-5, atol=1e-6)
  # Candidates are scored independently: a subset gives the same scores.
  np.testing.assert_allclose(model.apply(params, hist, cands[1:]),
                             model.apply(params, hist, cands)[:, 1:], rtol=1e-6)


def test_next_item_loss_in_batch_and_sampled_negatives():
  target = jnp.array([4, 6, 4])
  cand = jnp.array([4, 6, 4, 9, 6])  # 3 in-batch targets + 2 sampled negatives
  scores = jnp.array([[3.0, 1.0, 7.0, 0.5, 2.0],
                      [1.0, 2.0, 1.0, 0.0, 9.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0]])
  weight = jnp.array([1.0, 1.0, 0.0])  # row 2 is batch padding
  loss = din_lib.next_item_loss(scores, target, cand, weight)
  # Row 0: positive col 0; col 2 holds the same item (dropped); col 2 is also padding.
  r0 = -jax.nn.log_softmax(jnp.array([3.0, 1.0, 0.5, 2.0]))[0]
  # Row 1: positive col 1; col 4 is item 6 again (dropped); col 2 is a padded row (dropped).
  r1 = -jax.nn.log_softmax(jnp.array([1.0, 2.0, 0.0]))[1]
  np.testing.assert_allclose(loss, (r0 + r1) / 2, rtol=1e-6)


def test_mal_is_layernorm_of_linear_at_init():
  s = jax.random.normal(jax.random.key(1), (5, 12))
  mal = adaln.MAL(D)
  params = mal.init(jax.random.key(2), s)
  proj = params["params"]["proj"]
  lin = s @ proj["kernel"] + proj["bias"]
  expected = nn.LayerNorm(use_scale=False, use_bias=False).apply({}, lin)
  np.testing.assert_allclose(mal.apply(params, s), expected, rtol=1e-5, atol=1e-6)
  # ...and the modulation is live: non-zero g/h change the output.
  p2 = jax.tree.map(lambda x: x + 0.1, params)
  assert not np.allclose(mal.apply(p2, s), mal.apply(params, s))
  lin_mal = adaln.MAL(D, kind="linear")
  lp = lin_mal.init(jax.random.key(2), s)
  np.testing.assert_allclose(lin_mal.apply(lp, s), s @ lp["params"]["proj"]["kernel"]
                             + lp["params"]["proj"]["bias"], rtol=1e-6)
  with pytest.raises(ValueError, match="adaln"):
    adaln.MAL(D, kind="mlp").init(jax.random.key(0), s)


def _numpy_info_nce(a, b, ids, w, tau):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  sim = a @ b.T / tau
  n, total = len(ids), 0.0
  for i in range(n):
    if w[i] == 0:
      continue
    cols = [j for j in range(n) if w[j] > 0 and (j == i or ids[j] != ids[i])]
    row = sim[i, cols]
    col = sim[cols, i]
    k = cols.index(i)
    lse = lambda x: np.log(np.exp(x - x.max()).sum()) + x.max()
    total += w[i] * 0.5 * ((lse(row) - row[k]) + (lse(col) - col[k]))
  return total / w.sum()


def test_info_nce_matches_numpy_reference():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  ids = np.array([1, 2, 3, 2, 4, 5])  # item 2 twice: not its own negative
  w = np.array([1, 1, 1, 1, 1, 0.0])  # last row is padding
  got = contrastive.info_nce(jnp.asarray(a), jnp.asarray(b), jnp.asarray(ids), jnp.asarray(w), 0.5)
  np.testing.assert_allclose(got, _numpy_info_nce(a, b, ids, w, 0.5), rtol=1e-5)


def test_info_nce_is_minimal_when_aligned():
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.normal(size=(8, 16)))
  ids, w = jnp.arange(8), jnp.ones(8)
  aligned = contrastive.info_nce(a, a, ids, w, 0.1)
  for seed in range(5):
    perm = jnp.asarray(np.random.default_rng(seed).permutation(8))
    other = jnp.asarray(rng.normal(size=(8, 16)))
    assert aligned < contrastive.info_nce(a, a[perm], ids, w, 0.1) or (perm == jnp.arange(8)).all()
    assert aligned < contrastive.info_nce(a, other, ids, w, 0.1)
  assert float(aligned) < 0.01


def test_ranker_is_exact_over_chunks_and_shards(monkeypatch):
  from prorec_jax import din_rank, sharding
  n = 300
  model = din_lib.DIN(n, 16, 8, (8, 4))
  hist = np.random.default_rng(0).integers(0, n + 1, (13, 6)).astype(np.int32)
  params = model.init(jax.random.key(0), jnp.asarray(hist), jnp.arange(1, n + 1))
  full = np.asarray(model.apply(params, jnp.asarray(hist), jnp.arange(1, n + 1)))
  expected = np.argsort(-full, axis=1, kind="stable")[:, :20] + 1
  monkeypatch.setattr(din_rank, "_FLOAT_BUDGET", 1000)  # forces several item chunks (and a ragged last one)
  rank = din_rank.make_ranker(model, n, 6, 8, sharding.make_mesh(), batch_users=8)
  top, m = rank(params, hist, expected[:, 3])
  np.testing.assert_array_equal(top, expected)
  assert m["recall@5"] == 1.0 and m["ndcg@5"] == pytest.approx(1 / np.log2(5))


def test_in_batch_groups_partition_the_loss():
  """Groups only change which rows share candidates: one group equals the whole batch."""
  from prorec_jax import align_model
  m = align_model.AlignModel(N, D, 4, (8,), align=False)
  rng = np.random.default_rng(0)
  batch = dict(history=jnp.asarray(rng.integers(0, N + 1, (8, 5))),
               target=jnp.asarray(rng.integers(1, N + 1, 8)), weight=jnp.ones(8))
  negs = jnp.asarray(rng.integers(1, N + 1, 4))
  sem = jnp.zeros((N + 1, 3))
  p = m.init(jax.random.key(0), batch, negs, sem, 1.0, method="losses")
  whole = m.apply(p, batch, negs, sem, 1.0, 0, method="losses")[0]
  np.testing.assert_allclose(m.apply(p, batch, negs, sem, 1.0, 8, method="losses")[0], whole)
  # Two groups of 4: rows see 4 in-batch candidates instead of 8, so the loss is lower.
  assert m.apply(p, batch, negs, sem, 1.0, 4, method="losses")[0] < whole
  with pytest.raises(ValueError, match="multiple"):
    m.apply(p, batch, negs, sem, 1.0, 3, method="losses")
