"""How well a trained Stage II model ranks the items it was trained on, against validation and test.

  .venv/bin/python benchmarks/bench_fit_gap.py --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/fit_gap_beauty.json

Loads a finished run's Stage II parameters (train/params.msgpack) and runs the evaluation's beam
search on the same ``--users`` users (a seeded sample) three times: on each user's last training
example (target the third-last item, history the items before it: a pair the model was trained
on), on validation (target the second-last) and on test (the last). High training recall with low validation recall is a model that
memorises and does not generalise; low recall on both is one that has not fit its training data.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from prorec_jax import artifacts  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import generate  # noqa: E402
from prorec_jax import pipeline  # noqa: E402
from prorec_jax import sharding  # noqa: E402
from prorec_jax.data import split as split_lib  # noqa: E402


def last_train_example(train):
  """Each user's last training example (the pair just before validation), indexed by user."""
  last = {}
  for i, u in enumerate(train.user):
    last[int(u)] = i
  return last


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--users", type=int, default=8192)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  config = pipeline.load_config(args.workdir)  # the run's own config, overrides included
  ds, split, tables, model, consts, params = generate.load_trained(config, args.workdir)
  tokens = consts["tokens"]
  last = last_train_example(split.train)
  rows_v = np.flatnonzero(np.isin(split.valid.user, list(last)))  # users with a training pair
  rng = np.random.default_rng(args.seed)
  rows_v = np.sort(rng.choice(rows_v, min(args.users, len(rows_v)), replace=False))
  users = split.valid.user[rows_v]
  rows_t = np.array([last[int(u)] for u in users])
  by_user_test = {int(u): i for i, u in enumerate(split.test.user)}
  rows_te = np.array([by_user_test[int(u)] for u in users])
  fn = generate.evaluator(model, config, tables, tokens, ds.num_items, sharding.make_mesh())
  result = {}
  for name, ex, rows in (("train", split.train, rows_t), ("valid", split.valid, rows_v),
                         ("test", split.test, rows_te)):
    t0 = time.time()
    sub = split_lib.Examples(ex.history[rows], ex.target[rows], ex.user[rows])
    result[name] = fn(params, sub)[0]
    print(f"{name}: {json.dumps(result[name])} ({time.time() - t0:.0f}s)", flush=True)
  out = dict(kind="fit_gap", dataset=config.data.name, workdir=args.workdir, users=len(users),
             beam=config.eval.beam, metrics=result, commit=evaluate.commit(short=True),
             command=" ".join(["benchmarks/bench_fit_gap.py"] + sys.argv[1:]))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
