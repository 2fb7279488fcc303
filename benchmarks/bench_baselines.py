"""The reference baselines of a workdir's data, as a record for the main table.

  .venv/bin/python benchmarks/bench_baselines.py --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/baselines_beauty.json

Recomputes ``prorec_jax.baselines.evaluate`` on the data stage's sequences (seconds on the CPU):
popularity, ``markov`` (refit with the validation interactions for the test split) and
``markov_train`` (training part only, the data the generative models train on). The main table
shows these rows in place of the ones a pipeline record carries from its data stage.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prorec_jax import artifacts  # noqa: E402
from prorec_jax import baselines  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax.data import dataset as dataset_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True, help="a run with a finished data stage")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  ds = dataset_lib.load(args.workdir)
  res = baselines.evaluate(ds.sequences, ds.num_items)
  for name, r in res.items():
    print(f"{name:12s} test R@10 {r['test']['recall@10']:.4f} N@10 {r['test']['ndcg@10']:.4f}")
  out = dict(kind="baselines", dataset=ds.name, workdir=args.workdir, baselines=res,
             commit=evaluate.commit(short=True),
             command=" ".join(["benchmarks/bench_baselines.py"] + sys.argv[1:]))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
