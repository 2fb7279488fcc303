"""Constrained beam search over unicodes, the exhaustive scorer that checks it, and the code tables.

The trie of the existing codes is the codes stage's dense prefix table (``codes.build_tables``):
``child[l, p, t]`` is the prefix reached from prefix node ``p`` of level ``l`` by code ``t``,
-1 when no item's code starts that way, and at the last level the item id. A beam therefore
carries one int (its node) and, after L steps, that int is its item: a finished beam is an
existing code by construction, and distinct beams are distinct items (every item has its own
code).

Beam search (static shapes, one jit): the encoder runs once per user; at level ``l`` every live beam
scores the K codes of that level (log-softmax), invalid children get -inf, and the best ``beam``
(beam, code) pairs survive. When fewer valid continuations than ``beam`` exist the extra beams are
dead (score -inf, item 0) and are never returned as items.
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from prorec_jax import codes as codes_lib
from prorec_jax import seq2seq


def build_trie(codes_NxL, k):
  """Dense prefix tables of the codes of items 1..N (``codes_NxL[i - 1]`` = item i's code)."""
  return codes_lib.build_tables(codes_NxL, k)


def load_code_tables(workdir, num_items):
  """(codes [N + 1, L] int32, prefix tables, k) of the codes stage, checked against the data."""
  d = os.path.join(workdir, codes_lib.STAGE)
  path = os.path.join(d, codes_lib.CODES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage=codes first")
  codes = np.load(path)
  if codes.ndim != 2 or codes.shape[0] != num_items + 1:
    raise ValueError(f"{path}: shape {codes.shape}, but the data has {num_items} items: expected "
                     f"[{num_items + 1}, L]. The codes are from another dataset; rerun "
                     "--stage=codes")
  if os.path.exists(os.path.join(d, codes_lib.TABLES)):
    tables = codes_lib.load_tables(workdir)
  else:
    k = int(codes[1:].max()) + 1
    tables = build_trie(codes[1:], k)
  k = int(tables["k"])
  if codes[1:].min() < 0 or codes[1:].max() >= k:
    raise ValueError(f"{path}: code tokens outside 0..{k - 1}")
  if tables["child"].shape[0] != codes.shape[1]:
    raise ValueError(f"prefix tables have {tables['child'].shape[0]} levels, the codes "
                     f"{codes.shape[1]}; rerun --stage=codes")
  codes_lib.check_codes(codes[1:], tables)  # unique codes, tables accept exactly them
  return codes.astype(np.int32), tables, k


def check_histories(hist_BxH, num_items):
  """Unknown item ids and empty histories are errors, not silent garbage."""
  hist_BxH = np.asarray(hist_BxH)
  bad = np.argwhere((hist_BxH < 0) | (hist_BxH > num_items))
  if bad.size:
    r, c = bad[0]
    raise ValueError(f"history row {r} holds item id {hist_BxH[r, c]} outside 1..{num_items} "
                     "(0 is padding)")
  empty = np.flatnonzero(~(hist_BxH > 0).any(axis=1))
  if empty.size:
    raise ValueError(f"{empty.size} histories are empty (first: row {empty[0]}); a user needs at "
                     "least one item to be scored")


def check_beam(beam, topk, num_items):
  if beam < topk:
    raise ValueError(f"beam width {beam} is smaller than the largest k {topk}; set eval.beam >= "
                     f"{topk}")
  if num_items < topk:
    raise ValueError(f"a top-{topk} list needs at least {topk} items, the catalog has {num_items}")


def beam_search(model, params, hist_BxH, tokens_NxL, child_LxPxK, beam, topk):
  """Top-``topk`` distinct existing items [B, topk] and their code log-probabilities [B, topk]."""
  mem, mask = model.apply(params, hist_BxH, tokens_NxL, method=seq2seq.Seq2Seq.encode)
  return search_from_memory(model, params, mem, mask, child_LxPxK, beam, topk)


def search_from_memory(model, params, mem, mask, child_LxPxK, beam, topk):
  """The beam search proper, on encoder outputs (memory [B, T, W], key mask [B, T])."""
  num_levels, k = model.num_levels, model.k
  b = mem.shape[0]
  # Level 0 has one live beam per user (the empty prefix): decode it once, not ``beam`` times.
  score_BxM = jnp.zeros((b, 1))
  node_BxM = jnp.zeros((b, 1), jnp.int32)
  dec_BxMxS = jnp.full((b, 1, 1), seq2seq.BOS, jnp.int32)
  for level in range(num_levels):
    m = dec_BxMxS.shape[1]
    # The beams of a user share its memory: cross-attention keys/values are projected once per user.
    h = model.apply(params, mem, mask, dec_BxMxS.reshape(b * m, -1), group=m,
                    method=seq2seq.Seq2Seq.decode)[:, -1]
    logits = model.apply(params, h, level, method=seq2seq.Seq2Seq.level_logits)
    logp_BxMxK = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, m, k)
    child_BxMxK = child_LxPxK[level][node_BxM]
    logp_BxMxK = jnp.where(child_BxMxK >= 0, logp_BxMxK, -jnp.inf)
    cand_BxC = (score_BxM[..., None] + logp_BxMxK).reshape(b, m * k)
    child_BxC = child_BxMxK.reshape(b, m * k)
    if m * k < beam:  # fewer candidates than beams: the extra beams start dead
      cand_BxC = jnp.pad(cand_BxC, ((0, 0), (0, beam - m * k)), constant_values=-jnp.inf)
      child_BxC = jnp.pad(child_BxC, ((0, 0), (0, beam - m * k)), constant_values=-1)
    score_BxM, idx_BxM = jax.lax.top_k(cand_BxC, beam)
    parent_BxM, code_BxM = jnp.minimum(idx_BxM // k, m - 1), idx_BxM % k
    alive = score_BxM > -jnp.inf
    node_BxM = jnp.where(alive, jnp.take_along_axis(child_BxC, idx_BxM, 1), 0)
    prev = jnp.take_along_axis(dec_BxMxS, parent_BxM[..., None], axis=1)
    tok = (seq2seq.NUM_SPECIAL + level * k + code_BxM)[..., None]
    dec_BxMxS = jnp.concatenate([prev, tok.astype(jnp.int32)], axis=2)
  items_BxM = jnp.where(score_BxM > -jnp.inf, node_BxM, 0)  # dead beams are never items
  return items_BxM[:, :topk], score_BxM[:, :topk]


def code_logprob(model, params, hist_BxH, tokens_NxL, cand_tok_CxL):
  """log p(code) [B, C] of every candidate code for every user (teacher forcing)."""
  num_levels = model.num_levels
  mem, mask = model.apply(params, hist_BxH, tokens_NxL, method=seq2seq.Seq2Seq.encode)
  c = cand_tok_CxL.shape[0]
  dec_CxL = jnp.concatenate(
      [jnp.full((c, 1), seq2seq.BOS, jnp.int32), cand_tok_CxL[:, :num_levels - 1]], axis=1)
  labels_CxL = cand_tok_CxL - seq2seq.NUM_SPECIAL - jnp.arange(num_levels) * model.k

  def one_user(args):
    m, mk = args
    h = model.apply(params, jnp.broadcast_to(m, (c,) + m.shape), jnp.broadcast_to(mk, (c,) +
                                                                                 mk.shape),
                    dec_CxL, method=seq2seq.Seq2Seq.decode)
    logits = jnp.einsum("clw,lwk->clk", h, params["params"]["head_w"]) + \
        params["params"]["head_b"][None]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return jnp.take_along_axis(logp, labels_CxL[..., None], 2)[..., 0].sum(-1)
  return jax.lax.map(one_user, (mem, mask))


def exhaustive_topk(model, params, hist_BxH, tokens_NxL, topk, chunk=2048):
  """Reference ranking: every existing code scored; top-``topk`` items [B, topk] and scores."""
  fn = jax.jit(functools.partial(code_logprob, model))
  n = tokens_NxL.shape[0] - 1
  parts = []
  for lo in range(1, n + 1, chunk):
    ids = np.arange(lo, lo + chunk)
    ids = np.where(ids <= n, ids, 1)  # pad the last chunk with item 1, cut below
    parts.append(np.asarray(fn(params, hist_BxH, tokens_NxL, jnp.asarray(tokens_NxL)[ids])))
  logp_BxN = np.concatenate(parts, axis=1)[:, :n]
  order = np.argsort(-logp_BxN, axis=1, kind="stable")[:, :topk]
  return (order + 1).astype(np.int32), np.take_along_axis(logp_BxN, order, 1)


def make_recommender(model, beam, topk, mesh=None):
  """A jitted beam search ``fn(params, hist_BxH, tokens_NxL, child) -> (items, logp)``."""
  fn = functools.partial(beam_search, model, beam=beam, topk=topk)
  if mesh is None:
    return jax.jit(fn)
  from prorec_jax import sharding  # pylint: disable=g-import-not-at-top
  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  return jax.jit(fn, in_shardings=(repl, data, repl, repl), out_shardings=(data, data))


def recommend(search_fn, params, hist_UxH, tokens_NxL, child, batch_size, num_items):
  """Runs ``search_fn`` over all users in fixed-size batches (last one padded); numpy outputs."""
  hist_UxH = np.asarray(hist_UxH, np.int32)
  check_histories(hist_UxH, num_items)
  u = len(hist_UxH)
  pad = (-u) % batch_size
  hist = np.concatenate([hist_UxH, np.repeat(hist_UxH[:1], pad, 0)]) if pad else hist_UxH
  tokens, child = jnp.asarray(tokens_NxL), jnp.asarray(child)
  items, scores = [], []
  for lo in range(0, len(hist), batch_size):
    it, sc = search_fn(params, hist[lo:lo + batch_size], tokens, child)
    items.append(np.asarray(it))
    scores.append(np.asarray(sc))
  return np.concatenate(items)[:u], np.concatenate(scores)[:u]
