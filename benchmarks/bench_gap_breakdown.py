"""Stage II against the Markov chain on each kind of test pair, and the two combined
(prorec_jax/gap_analysis.py).

  .venv/bin/python benchmarks/bench_gap_breakdown.py --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/gap_breakdown_beauty.json

Needs a finished eval stage (its ``eval/topk_{valid,test}.npy``); the Markov lists are recomputed
from the workdir's data, counted on the training part only as Stage II is trained (the
``markov_train`` baseline). No model is run: seconds on the CPU.
``memory_first`` (not in the paper) puts the ``cap`` most frequent successors of the last item
ahead of the Stage II list; ``cap`` is chosen on validation NDCG@10, then reported on test.
``--din`` also ranks every test user with the Stage I DIN (best align checkpoint, exact
full-catalog ranking; minutes on the CPU) and adds it as a fourth model. A run made with
``bench_pipeline.py --reuse`` has the align outputs but not the checkpoints: pass the run they
came from as ``--din_workdir`` (its align outputs must be identical).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import prorec  # noqa: E402
from prorec_jax import align  # noqa: E402
from prorec_jax import artifacts  # noqa: E402
from prorec_jax import baselines  # noqa: E402
from prorec_jax import checkpoint  # noqa: E402
from prorec_jax import din_rank  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import gap_analysis  # noqa: E402
from prorec_jax import metrics  # noqa: E402
from prorec_jax import pipeline  # noqa: E402
from prorec_jax import sharding  # noqa: E402
from prorec_jax import train_loop  # noqa: E402
from prorec_jax.data import dataset as dataset_lib  # noqa: E402
from prorec_jax.data import split as split_lib  # noqa: E402

HOLDOUT = dict(valid=2, test=1)


def load_topk(workdir, split, num_users):
  path = os.path.join(workdir, "eval", f"topk_{split}.npy")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage=eval first")
  topk = np.load(path)
  if topk.shape[0] != num_users:
    raise ValueError(f"{path} has {topk.shape[0]} rows, the data {num_users} users")
  return topk


def din_topk(config, workdir, ds, din_workdir=""):
  """Top-20 test lists of the Stage I DIN restored from the align stage's best checkpoint (of
  ``din_workdir`` when given, whose align outputs must equal ``workdir``'s)."""
  a = config.align
  if din_workdir:
    for name in ("collaborative.npy", "integrated.npy"):
      if not np.array_equal(*(np.load(os.path.join(w, "align", name))
                              for w in (workdir, din_workdir))):
        raise ValueError(f"{din_workdir}/align/{name} differs from {workdir}'s: another Stage I")
    workdir = din_workdir
  ckpt_dir = os.path.join(workdir, "align", "checkpoints")
  if not os.path.isdir(os.path.join(ckpt_dir, "best")):  # orbax would create it empty
    raise FileNotFoundError(f"{ckpt_dir}/best missing: a --reuse'd run? pass --din_workdir")
  if a.fusion == "semantic_only":
    raise ValueError("a semantic_only run trains no DIN")
  model = align.build_model(config, ds.num_items)
  sem_dim = 1 if a.fusion == "collab_only" else align.load_semantic(workdir, ds.num_items).shape[1]
  optim = prorec.get_config(f"dataset={config.data.name}").align.optim  # fields older runs lack
  optim.update(a.optim.to_dict())
  template = train_loop.init_state(align.init_params(model, config, sem_dim),
                                   train_loop.make_optimizer(optim, 1))
  ckpt = checkpoint.Checkpoints(ckpt_dir)
  restored = ckpt.restore_best(template)
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"{ckpt_dir}/best is empty; run --stage=align")
  test = split_lib.leave_one_out(ds.sequences, config.data.max_history).test
  ranker = din_rank.make_ranker(model, ds.num_items, config.data.max_history,
                                a.model.attention_mlp[0], sharding.make_mesh(), a.eval_batch_size)
  topk, m = ranker(restored[0].params, test.history, test.target)
  print(f"DIN (best align epoch {restored[1]['best_epoch']}) test {m}", flush=True)
  return topk


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True, help="a run with a finished eval stage")
  ap.add_argument("--caps", default="1,2,3,5,10", help="memory_first caps tried on validation")
  ap.add_argument("--din", action="store_true", help="also rank test users with the Stage I DIN")
  ap.add_argument("--din_workdir", default="", help="run holding the align checkpoints (--reuse)")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  config = pipeline.load_config(args.workdir)
  ds = dataset_lib.load(args.workdir)
  caps = [int(c) for c in args.caps.split(",")]
  lists, targets, hybrid = {}, {}, {}
  for split, h in HOLDOUT.items():
    prorec = load_topk(args.workdir, split, ds.num_users)
    lists[split] = dict(prorec=prorec, markov=baselines.recommend(  # same data as Stage II
        ds.sequences, ds.num_items, h, "markov", prorec.shape[1], fit_holdout=2))
    targets[split] = np.array([s[len(s) - h] for s in ds.sequences])
    hybrid[split] = {c: gap_analysis.memory_first(prorec, ds.sequences, ds.num_items, h, c)
                     for c in caps}
  by_cap = {split: {c: metrics.from_topk(hybrid[split][c], targets[split]) for c in caps}
            for split in HOLDOUT}
  cap = max(caps, key=lambda c: by_cap["valid"][c]["ndcg@10"])
  lists["test"]["memory_first"] = hybrid["test"][cap]
  if args.din:
    lists["test"]["din"] = din_topk(config, args.workdir, ds, args.din_workdir)
  bucket_of = gap_analysis.buckets(ds.sequences, ds.num_items, holdout=1)
  table = gap_analysis.breakdown(lists["test"], targets["test"], bucket_of)
  both = gap_analysis.overlap(lists["test"]["prorec"], lists["test"]["markov"], targets["test"])
  for name, e in table.items():
    cells = "  ".join(f"{m} R@10 {e[m]['recall@10']:.4f}" for m in lists["test"] if m in e)
    print(f"{name:16s} share {e['share']:.3f}  {cells}")
  print(f"memory_first cap {cap} (best valid NDCG@10 of {caps}); hits@10 (prorec, markov): {both}")
  out = dict(kind="gap_breakdown", dataset=config.data.name, workdir=args.workdir,
             users=int(ds.num_users), buckets=table, overlap_at10=both, memory_first_cap=cap,
             memory_first_by_cap={s: {str(c): m for c, m in v.items()} for s, v in by_cap.items()},
             commit=evaluate.commit(short=True),
             command=" ".join(["benchmarks/bench_gap_breakdown.py"] + sys.argv[1:]))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
