"""Inference speed and code storage: one unified code vs two per-modality codes (EAGER-style).

  .venv/bin/python benchmarks/bench_unified_vs_dual.py --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/unified_vs_dual_beauty.json

Needs a workdir whose data, embed, align and codes stages are done. Unified: the configured
Stage II model beam-searching the codes stage's codes. Dual (the paper's comparison, EAGER-like):
hierarchical k-means codes of the semantic embeddings and of the collaborative embeddings (same K),
one shared encoder run once, two decoders (each the paper-size decoder over its own codes), each
beam-searching at the same width, the two top-k lists merged by log-probability into top-k distinct
items. Speed does not depend on the weights (shapes are static), so both use freshly initialised
parameters: this measures cost, not quality. Storage counts the code tables (int32 codes + prefix
tables) a deployment keeps.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import prorec  # noqa: E402
from prorec_jax import artifacts  # noqa: E402
from prorec_jax import codes as codes_lib  # noqa: E402
from prorec_jax import decode  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import seq2seq  # noqa: E402
from prorec_jax.data import dataset as dataset_lib  # noqa: E402
from prorec_jax.data import split as split_lib  # noqa: E402


def with_pad(codes_NxL):
  return np.concatenate([np.full((1, codes_NxL.shape[1]), -1, np.int32), codes_NxL]).astype(
      np.int32)


def code_side(config, codes, k, seed):
  """(model, params, tokens, child table, storage bytes) of one code table [N + 1, L].

  Each side gets its own ``seed``: identical weights would let XLA merge the two decoders' equal
  first steps (common-subexpression elimination) and flatter the dual setup."""
  tables = decode.build_trie(codes[1:], k)
  model = seq2seq.build(config, codes.shape[1], k, 0, codes.shape[0] - 1)
  tokens = seq2seq.token_table(codes, k)
  params = seq2seq.init_params(model, seed, tokens)
  storage = codes[1:].nbytes + tables["child"].nbytes
  return model, params, jnp.asarray(tokens), jnp.asarray(tables["child"]), storage


def merge(items_a, score_a, items_b, score_b, topk):
  """Top-k distinct items of two scored lists (higher log-probability first), on device."""
  items = jnp.concatenate([items_a, items_b], 1)
  score = jnp.concatenate([score_a, score_b], 1)
  # An item found by both decoders keeps its better score: drop later duplicates after sorting.
  order = jnp.argsort(-score, axis=1)
  items, score = jnp.take_along_axis(items, order, 1), jnp.take_along_axis(score, order, 1)
  dup = (items[:, :, None] == items[:, None, :]) & jnp.tril(jnp.ones(items.shape[1:] * 2, bool),
                                                              -1)[None]
  score = jnp.where(dup.any(-1) | (items == 0), -jnp.inf, score)
  top_score, idx = jax.lax.top_k(score, topk)
  return jnp.take_along_axis(items, idx, 1), top_score


def timed(fn, hist, batch, reps):
  fn(hist[:batch])[0].block_until_ready()  # compile
  best = float("inf")
  for _ in range(reps):
    t0 = time.time()
    for lo in range(0, len(hist), batch):
      out = fn(hist[lo:lo + batch])
    out[0].block_until_ready()
    best = min(best, time.time() - t0)
  return best


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--dataset", default="beauty")
  ap.add_argument("--variant", default="paper")
  ap.add_argument("--users", type=int, default=2048)
  ap.add_argument("--beam", type=int, default=20)
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--reps", type=int, default=2)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  config = prorec.get_config(f"dataset={args.dataset},variant={args.variant}")
  topk = max(config.eval.topk)
  wd = args.workdir
  ds = dataset_lib.load(wd)
  hist = split_lib.leave_one_out(ds.sequences, config.data.max_history).valid.history
  hist = jnp.asarray(hist[:args.users - args.users % args.batch])

  unified_codes, _, k = decode.load_code_tables(wd, ds.num_items)
  sides = {}
  for seed, (name, rel) in enumerate(
      (("semantic", "embed/semantic.npy"), ("collaborative", "align/collaborative.npy")), 1):
    x = artifacts.load_item_matrix(os.path.join(wd, rel), ds.num_items, rel.split("/")[0])
    c, _ = codes_lib.hierarchical_kmeans(x[1:], k, config.seed, config.codes.kmeans_iters,
                                         config.codes.kmeans_tol, config.codes.init)
    sides[name] = code_side(config, with_pad(c), k, config.seed + seed)
  um, up, ut, uc, u_bytes = code_side(config, unified_codes, k, config.seed)

  @jax.jit
  def unified(h):
    return decode.beam_search(um, up, h, ut, uc, args.beam, topk)

  (am, ap_, at, ac, a_bytes), (bm, bp, _, bc, b_bytes) = sides["semantic"], sides["collaborative"]

  @jax.jit
  def dual(h):
    mem, mask = am.apply(ap_, h, at, method=seq2seq.Seq2Seq.encode)  # shared encoder, run once
    ia, sa = decode.search_from_memory(am, ap_, mem, mask, ac, args.beam, topk)
    ib, sb = decode.search_from_memory(bm, bp, mem, mask, bc, args.beam, topk)
    return merge(ia, sa, ib, sb, topk)

  t_uni = timed(unified, hist, args.batch, args.reps)
  t_dual = timed(dual, hist, args.batch, args.reps)
  out = dict(dataset=args.dataset, users=int(hist.shape[0]), beam=args.beam, topk=topk, k=k,
             code_length=dict(unified=int(unified_codes.shape[1]),
                              semantic=int(am.num_levels), collaborative=int(bm.num_levels)),
             unified_seconds=round(t_uni, 3), dual_seconds=round(t_dual, 3),
             unified_users_per_s=round(hist.shape[0] / t_uni, 1),
             dual_users_per_s=round(hist.shape[0] / t_dual, 1),
             speedup=round(t_dual / t_uni, 2), unified_bytes=int(u_bytes),
             dual_bytes=int(a_bytes + b_bytes), storage_ratio=round((a_bytes + b_bytes) / u_bytes, 2),
             commit=evaluate.commit(short=True), devices=[str(d) for d in jax.devices()], seed=config.seed,
             command=" ".join(["benchmarks/bench_unified_vs_dual.py"] + sys.argv[1:]))
  print(json.dumps(out))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
