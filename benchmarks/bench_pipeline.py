"""The whole pipeline on one dataset, timed per stage; one JSON record for benchmarks/report.py.

  .venv/bin/python benchmarks/bench_pipeline.py --dataset=beauty --workdir=/tmp/pipe_beauty \
      --out=benchmarks/results/pipeline_beauty_seed0.json

Runs every stage in order (data, embed, align, codes, train, eval, analyze) in this process, so
the record holds each stage's wall time, the peak RSS, the eval stage's results.json (test metrics
from the checkpoint chosen on validation), Stage II's epochs, and where it ran (commit, machine,
load). ``--set=field=value`` (repeatable) overrides any other field. ``--ablation=no_ikd`` runs a named ablation of configs/ablations.py. Stages already done in the workdir are skipped (their time is then ~0): use ``--fresh``
for a timing run.
"""
import json
import os
import platform
import resource
import shutil
import sys
import time

from absl import app
from absl import flags
from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import ablations  # noqa: E402
from configs import prorec  # noqa: E402
from prorec_jax import artifacts  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import pipeline  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", "beauty", "Dataset name.")
_VARIANT = flags.DEFINE_string("variant", "paper", "Stage II model size (configs/prorec.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.", required=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON record.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "config.seed.")
_ABLATION = flags.DEFINE_enum("ablation", "prorec", list(ablations.ABLATIONS),
                              "Named ablation of configs/ablations.py (also the report's row name).")
_SET = flags.DEFINE_multi_string("set", [], "Config override field=value, e.g. "
                                 "generate.ikd=False (value parsed as JSON, else a string).")
_STAGES = flags.DEFINE_list("stages", list(pipeline.ORDER), "Stages to run, in order.")
_FRESH = flags.DEFINE_bool("fresh", False, "Delete the workdir first.")
_REUSE = flags.DEFINE_string("reuse", "", "A finished workdir of the same dataset: its stage "
                             "outputs are copied in first (not its checkpoints); stages whose "
                             "config is unchanged then skip, so an ablation reruns only what it "
                             "changes.")
_DATA_ROOT = flags.DEFINE_string("data_root", os.path.join(REPO, "..", "shared", "data"),
                                 "data.root (absolute, so the script runs from any directory).")


def _parse(value):
  try:
    return json.loads(value)
  except json.JSONDecodeError:
    return {"True": True, "False": False}.get(value, value)


def build_config():
  config = prorec.get_config(f"dataset={_DATASET.value},variant={_VARIANT.value}")
  with config.unlocked():
    config.seed = _SEED.value
    config.data.root = os.path.abspath(_DATA_ROOT.value)
  ablations.apply(config, _ABLATION.value)
  for item in _SET.value:
    if "=" not in item:
      raise ValueError(f"--set {item!r} is not field=value")
    field, value = item.split("=", 1)
    *parents, last = field.split(".")
    node = config
    for name in parents:
      node = node[name]
    value = _parse(value)
    if isinstance(node[last], tuple):  # a misspelt field raises here: the config is locked
      value = tuple(value)
    node[last] = value
  return config


def machine():
  model = "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import jax  # pylint: disable=g-import-not-at-top
  return dict(cpu=model, cores=os.cpu_count(), platform=platform.platform(),
              jax=jax.__version__, devices=[str(d) for d in jax.devices()])


def _load(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _log(workdir, stage):
  path = os.path.join(workdir, stage, "train_log.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def upstream_digests(workdir, stages_run):
  """Content digest of every finished stage this run consumes but does not run (copied by
  --reuse or left from an earlier run): ablations that share a Stage I show the same digest."""
  return {stage: artifacts.content_digest(os.path.join(workdir, stage)) for stage in pipeline.ORDER
          if stage not in stages_run
          and os.path.exists(os.path.join(workdir, stage, artifacts.DONE))}


def main(argv):
  del argv
  config = build_config()
  workdir = _WORKDIR.value
  if _FRESH.value:
    shutil.rmtree(workdir, ignore_errors=True)
  if _REUSE.value:
    for stage in pipeline.ORDER:
      src, dst = os.path.join(_REUSE.value, stage), os.path.join(workdir, stage)
      if os.path.isdir(src) and not os.path.exists(dst):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
  record = dict(dataset=_DATASET.value, label=_ABLATION.value, seed=_SEED.value, reuse=_REUSE.value,
                variant=_VARIANT.value, overrides=list(_SET.value), commit=evaluate.commit(short=True),
                machine=machine(), load_before=os.getloadavg(), stage_seconds={},
                started=time.strftime("%Y-%m-%d %H:%M:%S"),
                command=" ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
                upstream=upstream_digests(workdir, _STAGES.value))
  t0 = time.time()
  for stage in _STAGES.value:
    t1 = time.time()
    pipeline.run(stage, config, workdir)
    record["stage_seconds"][stage] = round(time.time() - t1, 1)
    logging.info("bench: %s %.1fs", stage, record["stage_seconds"][stage])
  record.update(total_seconds=round(time.time() - t0, 1), load_after=os.getloadavg(),
                peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
  def current(stage, name):  # only stages run (or verified up to date) here, never stale copies
    return _load(os.path.join(workdir, stage, name)) if stage in _STAGES.value else None
  results = current("eval", "results.json") or {}
  results.pop("config", None)  # the record keeps the overrides; the workdir keeps the config
  record["results"] = results
  record["train"] = current("train", "metrics.json")
  record["align"] = current("align", "metrics.json")
  for stage in ("align", "train"):  # per-epoch losses, validation and time, for the narrative
    record[f"{stage}_log"] = _log(workdir, stage) if stage in _STAGES.value else None
  record["dominance"] = current("analyze", "dominance.json")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  artifacts.save_json(_OUT.value, record)
  print(json.dumps(dict(total_seconds=record["total_seconds"], stage_seconds=record["stage_seconds"],
                        test=results.get("test"))))


if __name__ == "__main__":
  app.run(main)
