"""Stage II speed: training throughput (sequences/s) and constrained beam search (users/s).

  .venv/bin/python benchmarks/bench_generate.py [--variant=paper] [--items=12101] [--k=256]

Fabricates a Beauty-sized catalog (random unique 2-level codes, random integrated embeddings,
random histories of 20 items) so it needs no upstream stage; the model and the step are the ones
the train stage runs (jitted scan of ``chunk`` steps, Adam, dropout, IKD with 1024 negatives).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import prorec  # noqa: E402
from prorec_jax import decode  # noqa: E402
from prorec_jax import generate  # noqa: E402
from prorec_jax import seq2seq  # noqa: E402
from prorec_jax import sharding  # noqa: E402
from prorec_jax import train_loop  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", default="paper")
  ap.add_argument("--items", type=int, default=12101)
  ap.add_argument("--k", type=int, default=256)
  ap.add_argument("--history_tokens", default="per_code,per_item")
  ap.add_argument("--chunk", type=int, default=10)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--beams", default="20,50")
  ap.add_argument("--users", type=int, default=256)
  ap.add_argument("--ikd", type=int, default=1)
  args = ap.parse_args()
  n, k, dim = args.items, args.k, 128
  rng = np.random.default_rng(0)
  flat = rng.choice(k * k, n, replace=False)
  codes = np.concatenate([[[-1, -1]], np.stack([flat // k, flat % k], 1)]).astype(np.int32)
  tables = decode.build_trie(codes[1:], k)
  integrated = rng.normal(size=(n + 1, dim)).astype(np.float32)
  mesh = sharding.make_mesh()
  print(f"devices {jax.devices()}, items {n}, k {k}, variant {args.variant}, ikd {args.ikd}")
  for ht in args.history_tokens.split(","):
    config = prorec.get_config(f"dataset=beauty,variant={args.variant}")
    with config.unlocked():
      config.generate.history_tokens = ht
      config.generate.ikd = bool(args.ikd)
    g = config.generate
    model = seq2seq.build(config, 2, k, dim, n)
    tokens = seq2seq.token_table(codes, k)
    consts = jax.device_put(dict(tokens=jnp.asarray(tokens), integrated=jnp.asarray(integrated)),
                            sharding.replicated(mesh))
    tx = train_loop.make_optimizer(g.optim)
    state = jax.device_put(train_loop.init_state(seq2seq.init_params(model, 0, tokens), tx),
                           sharding.replicated(mesh))
    chunk = train_loop.compile_chunk(
        train_loop.make_train_step(generate.make_loss(model, config, n), tx), mesh)
    b, s = g.optim.batch_size, args.chunk
    batches = dict(history=rng.integers(1, n + 1, (s, b, 20)).astype(np.int32),
                   target=rng.integers(1, n + 1, (s, b)).astype(np.int32),
                   weight=np.ones((s, b), np.float32))
    key = jax.random.key(0)
    t0 = time.time()
    state, m = chunk(state, batches, key, consts)
    jax.block_until_ready(m)
    compile_s = time.time() - t0
    times = []
    for _ in range(args.reps):
      t0 = time.time()
      state, m = chunk(state, batches, key, consts)
      jax.block_until_ready(m)
      times.append(time.time() - t0)
    best = min(times)
    print(f"train {ht:8s}: {s * b / best:7.0f} sequences/s (best of {args.reps}, median "
          f"{s * b / np.median(times):.0f}; batch {b}, first call incl. compile {compile_s:.0f}s)")
    hist = rng.integers(1, n + 1, (args.users, 20)).astype(np.int32)
    for beam in map(int, args.beams.split(",")):
      search = decode.make_recommender(model, beam, 20, mesh)
      run = lambda: decode.recommend(search, state.params, hist, tokens, tables["child"],  # noqa
                                     args.users, n)
      t0 = time.time()
      run()
      c = time.time() - t0
      t0 = time.time()
      run()
      dt = time.time() - t0
      print(f"beam {ht:8s}: beam {beam}: {args.users / dt:7.0f} users/s (batch {args.users}, "
            f"compile {c - dt:.0f}s)")


if __name__ == "__main__":
  main()
