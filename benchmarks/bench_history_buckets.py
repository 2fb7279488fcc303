"""Stage II training speed with history buckets against uniform batches, on a real training set.

  .venv/bin/python benchmarks/bench_history_buckets.py --workdir=/tmp/pipe_beauty \
      --buckets=4,8,12 --out=benchmarks/results/history_buckets_beauty.json

Needs a workdir whose data, codes and align stages are done; the model and optimiser are the
current defaults of ``--dataset`` and ``--variant`` (not the workdir's own config). Runs the train
stage's own jitted step (``generate.train_chunk`` on ``generate.make_epoch_batches``) over the
first ``--steps`` batches of epoch 1, uniform batches and bucketed ones in turn (``--reps`` times
each, alternating so load on the machine hits both alike), and projects a whole epoch from the
best rep. The record keeps the mean history width of the timed batches and of the whole epoch:
the projection is fair when they are close. Only the speed is measured here; what bucketing does
to the trained model needs a full train run.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_pipeline  # noqa: E402
from configs import prorec  # noqa: E402
from prorec_jax import artifacts  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import generate  # noqa: E402
from prorec_jax import seq2seq  # noqa: E402
from prorec_jax import sharding  # noqa: E402
from prorec_jax import train_loop  # noqa: E402


def with_buckets(config, buckets):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.generate.optim.history_buckets = tuple(buckets)
  return c


def variant(config, split, model, consts, num_items, mesh, steps):
  """The train stage's chunk, the first ``steps`` batches of epoch 1, the steps of a whole epoch
  and a fresh-state function, under ``config``'s history_buckets."""
  batches = generate.make_epoch_batches(config, split.train)(1)
  tx = train_loop.make_optimizer(config.generate.optim)
  chunk = generate.train_chunk(config, model, num_items, tx, mesh)
  params = jax.device_get(seq2seq.init_params(model, config.seed, consts["tokens"]))

  def fresh():
    return jax.device_put(train_loop.init_state(params, tx), sharding.replicated(mesh))
  widths = np.asarray(generate.history_widths(config))
  bucket = batches["bucket"][:, 0] if "bucket" in batches else np.zeros(len(batches["index"]), int)
  mix = dict(mean_width_timed=float(widths[bucket[:steps]].mean()),
             mean_width_epoch=float(widths[bucket].mean()))
  return chunk, {k: v[:steps] for k, v in batches.items()}, len(batches["index"]), fresh, mix


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--dataset", default="beauty")
  ap.add_argument("--variant", default="paper")
  ap.add_argument("--buckets", default="4,8,12")
  ap.add_argument("--steps", type=int, default=200)
  ap.add_argument("--reps", type=int, default=2)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  config = prorec.get_config(f"dataset={args.dataset},variant={args.variant}")
  ds, split, _, model, consts = generate.setup(config, args.workdir)
  mesh = sharding.make_mesh()
  cst = jax.device_put({k: jnp.asarray(v) for k, v in consts.items()}, sharding.replicated(mesh))
  cst["examples"] = train_loop.device_examples(split.train, mesh)
  chunk_steps = config.generate.optim.chunk_steps
  buckets = tuple(int(b) for b in args.buckets.split(",") if b)
  runs = {}
  for name, b in (("uniform", ()), ("bucketed", buckets)):
    c = with_buckets(config, b)
    chunk, batches, epoch_steps, fresh, mix = variant(c, split, model, consts, ds.num_items,
                                                      mesh, args.steps)
    t0 = time.time()  # compiles every chunk shape once (a full chunk and the remainder)
    train_loop.run_epoch(chunk, fresh(), batches, jax.random.key(0), cst, mesh, chunk_steps)
    runs[name] = dict(chunk=chunk, batches=batches, fresh=fresh, times=[],
                      record=dict(mix, epoch_steps=epoch_steps,
                                  compile_and_first_s=time.time() - t0,
                                  widths=list(generate.history_widths(c))))
  for _ in range(args.reps):
    for name, r in runs.items():
      state = r["fresh"]()
      t0 = time.time()
      state, _ = train_loop.run_epoch(r["chunk"], state, r["batches"], jax.random.key(0), cst,
                                      mesh, chunk_steps)
      jax.block_until_ready(state.params)
      r["times"].append(time.time() - t0)
  lengths = np.sum(split.train.history > 0, axis=1)
  out = dict(kind="history_buckets", dataset=config.data.name, workdir=args.workdir,
             history_length=dict(mean=float(lengths.mean()), median=float(np.median(lengths)),
                                 share_full=float(np.mean(lengths == lengths.max())),
                                 slots=int(split.train.history.shape[1])),
             steps=args.steps, batch_size=config.generate.optim.batch_size, reps=args.reps,
             commit=evaluate.commit(short=True), machine=bench_pipeline.machine(),
             load=os.getloadavg(),
             command=" ".join(["benchmarks/bench_history_buckets.py"] + sys.argv[1:]))
  for name, r in runs.items():
    best = min(r["times"])
    rows = int(np.sum(r["batches"]["index"] >= 0))
    out[name] = dict(r["record"], seconds=r["times"], steps_per_s=args.steps / best,
                     sequences_per_s=rows / best,
                     projected_epoch_s=r["record"]["epoch_steps"] * best / args.steps)
    print(f"{name}: widths {r['record']['widths']}, {args.steps / best:.2f} steps/s, "
          f"{rows / best:.0f} sequences/s, epoch of {r['record']['epoch_steps']} steps "
          f"~{out[name]['projected_epoch_s']:.0f}s (times {np.round(r['times'], 1).tolist()})",
          flush=True)
  out["epoch_speedup"] = out["uniform"]["projected_epoch_s"] / out["bucketed"]["projected_epoch_s"]
  print(f"epoch speed-up {out['epoch_speedup']:.2f}x; training history lengths "
        f"{json.dumps(out['history_length'])}")
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
