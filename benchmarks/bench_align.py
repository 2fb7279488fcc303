"""Stage I (align) wall time, peak memory and DIN metrics on a real dataset.

  .venv/bin/python benchmarks/bench_align.py --dataset=beauty --workdir=/tmp/bench_align_beauty

Runs the data and embed stages first if needed (cached), then the align stage from scratch, and
prints one JSON line: seconds, peak RSS, epochs, DIN valid/test metrics, seed and commit.
"""
import json
import os
import resource
import sys
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import prorec  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import pipeline  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", "beauty", "Dataset name.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.", required=True)
_FUSION = flags.DEFINE_string("fusion", "prorec", "align.fusion.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def main(argv):
  del argv
  config = prorec.get_config(f"dataset={_DATASET.value}")
  with config.unlocked():
    config.seed = _SEED.value
    config.align.fusion = _FUSION.value
  for stage in ("data", "embed"):
    pipeline.run(stage, config, _WORKDIR.value)
  t0 = time.time()
  pipeline.run("align", config, _WORKDIR.value, force=True)
  seconds = time.time() - t0
  with open(os.path.join(_WORKDIR.value, "align", "metrics.json")) as f:
    m = json.load(f)
  out = dict(dataset=_DATASET.value, fusion=_FUSION.value, seed=_SEED.value,
             commit=evaluate.commit(short=True),
             align_seconds=round(seconds, 1),
             peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
             epochs=m.get("epochs"), best_epoch=m.get("best_epoch"), eval_users=m.get("eval_users"),
             valid=m.get("valid"), test=m.get("test"))
  logging.info("result: %s", out)
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
