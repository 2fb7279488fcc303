"""Beam search vs the exhaustive scorer on a trained model, as the beam widens.

  .venv/bin/python benchmarks/bench_beam_agreement.py --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/beam_agreement_beauty.json

Loads a finished run's Stage II parameters (train/params.msgpack) and, for the first ``--users``
test users, compares the constrained beam search's top-20 at each ``--beams`` width with the
exhaustive top-20 (every existing code scored by teacher forcing). A 2-level search whose beam
holds every first-level prefix is exact, so agreement must reach 1.0 at that width: the check that
the search itself is right, separate from how much a narrow beam prunes.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from prorec_jax import artifacts  # noqa: E402
from prorec_jax import decode  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import generate  # noqa: E402
from prorec_jax import pipeline  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--users", type=int, default=64)
  ap.add_argument("--beams", default="20,50,100,256")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  config = pipeline.load_config(args.workdir)  # the run's own config, overrides included
  ds, split, tables, model, consts, params = generate.load_trained(config, args.workdir)
  tokens = consts["tokens"]
  hist = split.test.history[:args.users]
  topk = max(config.eval.topk)
  t0 = time.time()
  ex_items, _ = decode.exhaustive_topk(model, params, hist, tokens, topk)
  ex_seconds = time.time() - t0
  rows = []
  for beam in map(int, args.beams.split(",")):
    search = decode.make_recommender(model, beam, topk)
    items, _ = decode.recommend(search, params, hist, tokens, tables["child"], len(hist),
                                ds.num_items)
    same = np.all(items == ex_items, axis=1)
    overlap = np.mean([len(set(a) & set(b)) / topk for a, b in zip(items, ex_items)])
    rows.append(dict(beam=beam, exact_list_rate=float(same.mean()), topk_overlap=float(overlap)))
    print(json.dumps(rows[-1]), flush=True)
  prefixes = int(tables["num_prefixes"][-1]) if "num_prefixes" in tables else None
  out = dict(kind="beam_agreement", dataset=config.data.name, users=len(hist), topk=topk,
             first_level_prefixes=prefixes, rows=rows, exhaustive_seconds=round(ex_seconds, 1),
             commit=evaluate.commit(short=True), command=" ".join(
                 ["benchmarks/bench_beam_agreement.py"] + sys.argv[1:]))
  print(json.dumps(out))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
