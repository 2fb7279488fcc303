"""Stage II model properties: causal decoder, padding invariance, IKD gradient isolation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import prorec
from prorec_jax import generate
from prorec_jax import seq2seq

N, L, K, H, D = 30, 2, 8, 6, 5


def _model(history_tokens="per_code", ikd_dim=D, dropout=0.0, item_ids=False):
  return seq2seq.Seq2Seq(num_levels=L, k=K, max_history=H, width=16, num_heads=2, mlp_width=32,
                         num_encoder_layers=1, num_decoder_layers=2, dropout=dropout,
                         history_tokens=history_tokens, ikd_dim=ikd_dim,
                         num_item_ids=N + 1 if item_ids else 0)


def _tokens(seed=0):
  flat = np.random.default_rng(seed).choice(K * K, N, replace=False)
  codes = np.concatenate([[[-1, -1]], np.stack([flat // K, flat % K], 1)])
  return seq2seq.token_table(codes, K)


def test_token_table_layout():
  tok = seq2seq.token_table(np.array([[-1, -1], [0, 3], [2, 7]]), K)
  np.testing.assert_array_equal(tok, [[0, 0], [3, 3 + K + 3], [5, 3 + K + 7]])
  assert seq2seq.vocab_size(L, K) == 3 + L * K


def test_decoder_is_causal():
  model, tok = _model(), jnp.asarray(_tokens())
  params = seq2seq.init_params(model, 0, tok)
  hist = jnp.array([[0, 0, 4, 5, 6, 7]])
  mem, mask = model.apply(params, hist, tok, method=seq2seq.Seq2Seq.encode)
  y = jax.random.normal(jax.random.key(1), (1, L + 2, 16))
  out_fn = lambda y: model.apply(params, mem, mask, y,
                                 method=seq2seq.Seq2Seq.decode_embedded)[0].sum(-1)
  jac_SxSxW = np.asarray(jax.jit(jax.jacrev(out_fn))(y))[:, 0]  # d out[t] / d input[s]
  for t in range(L + 2):
    assert np.abs(jac_SxSxW[t, t + 1:]).max(initial=0.0) == 0.0  # later inputs: exactly zero
    assert np.abs(jac_SxSxW[t, :t + 1]).max() > 0.0


def test_grouped_decode_equals_repeated_memory():
  """Beam search shares a user's memory across its beams (group=beam): same output as repeating
  the memory once per beam, which is what the per-row decoder computes."""
  model, tok = _model(), jnp.asarray(_tokens())
  params = seq2seq.init_params(model, 0, tok)
  hist = jnp.array([[0, 0, 4, 5, 6, 7], [0, 9, 3, 2, 1, 8]])
  mem, mask = model.apply(params, hist, tok, method=seq2seq.Seq2Seq.encode)
  beams = 3
  dec = jax.random.randint(jax.random.key(2), (2 * beams, L + 1), 3, 3 + L * K)
  grouped = model.apply(params, mem, mask, dec, group=beams, method=seq2seq.Seq2Seq.decode)
  repeated = model.apply(params, jnp.repeat(mem, beams, 0), jnp.repeat(mask, beams, 0), dec,
                         method=seq2seq.Seq2Seq.decode)
  np.testing.assert_allclose(grouped, repeated, atol=1e-5)
  swapped = model.apply(params, mem[::-1], mask[::-1], dec, group=beams,
                        method=seq2seq.Seq2Seq.decode)
  assert np.abs(np.asarray(swapped - repeated)).max() > 1e-4  # rows do see their own user


@pytest.mark.parametrize("item_ids", [False, True])
@pytest.mark.parametrize("history_tokens", ["per_code", "per_item"])
def test_padding_does_not_change_output(history_tokens, item_ids):
  model, tok = _model(history_tokens, item_ids=item_ids), jnp.asarray(_tokens())
  params = seq2seq.init_params(model, 0, tok)
  tgt = tok[jnp.array([3])]
  full = model.apply(params, jnp.array([[0, 0, 0, 9, 4, 2]]), tgt, tok)[0]
  short = model.apply(params, jnp.array([[9, 4, 2]]), tgt, tok)[0]  # less padding, same items
  other = model.apply(params, jnp.array([[0, 0, 0, 8, 4, 2]]), tgt, tok)[0]
  np.testing.assert_allclose(full, short, atol=1e-5)
  assert np.abs(np.asarray(full - other)).max() > 1e-4  # the real items do matter


@pytest.mark.parametrize("history_tokens", ["per_code", "per_item"])
def test_item_ids_tell_apart_items_with_equal_codes(history_tokens):
  """Items 4 and 5 get the same codes: codes alone cannot tell the histories apart, item ids can."""
  tok = _tokens()
  tok[5] = tok[4]
  tok = jnp.asarray(tok)
  hist_a, hist_b, tgt = jnp.array([[0, 0, 0, 9, 4, 2]]), jnp.array([[0, 0, 0, 9, 5, 2]]), tok[3:4]
  for item_ids, differ in ((False, False), (True, True)):
    model = _model(history_tokens, item_ids=item_ids)
    params = seq2seq.init_params(model, 0, tok)
    a, b = (model.apply(params, h, tgt, tok)[0] for h in (hist_a, hist_b))
    assert (np.abs(np.asarray(a - b)).max() > 1e-4) == differ


def test_build_item_ids_needs_catalog_size():
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.generate.history_item_ids = True
  with pytest.raises(ValueError, match="num_items"):
    seq2seq.build(c, L, K, D)
  assert seq2seq.build(c, L, K, D, N).num_item_ids == N + 1


def test_ikd_token_leaves_code_logits_alone():
  tok = jnp.asarray(_tokens())
  with_ikd, without = _model(ikd_dim=D), _model(ikd_dim=0)
  params = seq2seq.init_params(with_ikd, 0, tok)
  hist, tgt = jnp.array([[0, 1, 2, 3, 4, 5]]), tok[jnp.array([7])]
  a, q = with_ikd.apply(params, hist, tgt, tok)
  sub = {"params": {k: v for k, v in params["params"].items() if k != "ikd_proj"}}
  b, none = without.apply(sub, hist, tgt, tok)
  np.testing.assert_allclose(a, b, atol=1e-6)
  assert q.shape == (1, D) and none is None


def _loss_setup(ikd, weight):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.generate.update(ikd=ikd, ikd_weight=weight, ikd_negatives=16)
  model = _model(ikd_dim=D if ikd else 0)  # no dropout: masks depend on the sequence length
  tok = _tokens()
  consts = dict(tokens=jnp.asarray(tok),
                integrated=jax.random.normal(jax.random.key(2), (N + 1, D)))
  rng = np.random.default_rng(0)
  batch = dict(history=jnp.asarray(rng.integers(0, N + 1, (8, H)).astype(np.int32)),
               target=jnp.asarray(rng.integers(1, N + 1, 8).astype(np.int32)),
               weight=jnp.ones(8))
  return model, generate.make_loss(model, c, N), tok, consts, batch


def test_ikd_weight_zero_gives_gen_only_gradients():
  m1, loss_ikd, tok, consts, batch = _loss_setup(True, 0.0)
  m0, loss_gen, _, _, _ = _loss_setup(False, 1.0)
  params = seq2seq.init_params(m1, 0, jnp.asarray(tok))
  sub = {"params": {k: v for k, v in params["params"].items() if k != "ikd_proj"}}
  key = jax.random.key(3)
  (l1, aux1), g1 = jax.jit(jax.value_and_grad(loss_ikd, has_aux=True))(params, batch, key, consts)
  (l0, _), g0 = jax.jit(jax.value_and_grad(loss_gen, has_aux=True))(sub, batch, key, consts)
  assert float(aux1["ikd_loss"]) > 0.0
  np.testing.assert_allclose(l1, l0, rtol=1e-6)  # the masks and sums differ in length only
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               {k: g1["params"][k] for k in sub["params"]}, g0["params"])
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g1["params"]["ikd_proj"]))


def test_ikd_loss_never_uses_target_as_negative():
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  table = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  target, w = jnp.array([1, 2]), jnp.ones(2)
  only_targets = generate.ikd_loss(q, target, table, jnp.array([1, 2]), 1.0, w)
  # row 0: negatives {1 (masked), 2}; row 1: {1, 2 (masked)}: each has one cos-0 negative
  np.testing.assert_allclose(only_targets, np.log1p(np.exp(-1.0)), rtol=1e-6)
  assert np.isfinite(float(generate.ikd_loss(q, target, table, jnp.array([1, 1]), 1.0, w)))
