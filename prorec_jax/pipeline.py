"""The stages of PRORec in order, dispatched through one dict, and the end-of-run report."""
import importlib
import importlib.util
import os
import shutil
import time

import ml_collections
from absl import logging

from prorec_jax import artifacts

# stage -> (module with run(config, workdir), the issue that builds it). A stage whose module does
# not exist yet is reported as not implemented and skipped by --stage=all.
STAGES = {
    "data": ("prorec_jax.data.stage", "#2"),
    "embed": ("prorec_jax.embed", "#3"),
    "align": ("prorec_jax.align", "#4"),
    "codes": ("prorec_jax.codes", "#5"),
    "train": ("prorec_jax.generate", "#6"),
    "eval": ("prorec_jax.evaluate", "#6"),
    "analyze": ("prorec_jax.analysis", "#5"),
}
ORDER = tuple(STAGES)


def implemented(stage):
  return importlib.util.find_spec(STAGES[stage][0]) is not None


def run_stage(stage, config, workdir, force=False):
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {ORDER + ('all',)}")
  if not implemented(stage):
    raise NotImplementedError(f"stage {stage!r} is not implemented yet (issue {STAGES[stage][1]})")
  if force:  # from scratch: outputs, done marker and checkpoints
    shutil.rmtree(artifacts.stage_dir(workdir, stage), ignore_errors=True)
  module = importlib.import_module(STAGES[stage][0])
  t0 = time.time()
  logging.info("=== stage %s ===", stage)
  module.run(config, workdir)
  logging.info("=== stage %s finished in %.1fs ===", stage, time.time() - t0)


def run(stage, config, workdir, force=False):
  """Runs one stage, or with ``all`` every implemented stage in order; returns the skipped ones."""
  os.makedirs(workdir, exist_ok=True)
  artifacts.save_json(os.path.join(workdir, "config.json"), config.to_dict())
  if stage != "all":
    run_stage(stage, config, workdir, force)
    return []
  missing = [s for s in ORDER if not implemented(s)]
  for s in ORDER:
    if implemented(s):
      run_stage(s, config, workdir, force)
  if missing:
    logging.warning("not implemented yet, skipped: %s",
                    ", ".join(f"{s} (issue {STAGES[s][1]})" for s in missing))
  return missing


def load_config(workdir):
  """The config of the workdir's last ``run`` (its config.json), locked: what a script that
  reloads a trained model must build it with, overrides included."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing: {workdir} is not a run directory")
  config = ml_collections.ConfigDict(artifacts.load_json(path))
  config.lock()
  return config


def adopt_for_extension(workdir, stage, config=None):
  """Lets a finished training stage ("align" or "train") written before extensions existed be
  extended: its marker gets the extension key and limits of ``config`` (default: the workdir's
  config.json), after a check that config.json gives the fingerprint the stage finished with (else
  the last launch changed the stage's config, and the limits it ran with are unknown). Pass as
  ``config`` the config.json brought up to the current code's fields, so that the key is the one a
  relaunch computes."""
  if stage not in ("align", "train"):
    raise ValueError(f"only the training stages align and train can be extended, not {stage!r}")
  module = importlib.import_module(STAGES[stage][0])
  saved = load_config(workdir)
  done, fp = artifacts.stage_fingerprint(workdir, stage), module.fingerprint(saved, workdir)
  if fp != done:
    raise ValueError(f"{workdir}/config.json gives {stage} fingerprint {fp}, but the stage "
                     f"finished with {done}: the last launch changed its config")
  extend = module.extension(config if config is not None else saved, workdir)
  artifacts.write_marker(workdir, stage, fp, extend)
  return extend[1]


CHECKABLE = ("align", "codes", "train", "eval")  # modules with fingerprint(config, workdir)


def is_current(workdir, stage):
  """Whether ``stage`` (one of ``CHECKABLE``) finished, with all its outputs, under the fingerprint
  the workdir's config.json and its upstream stages' markers give now: false for outputs that a
  later upstream rerun made stale (e.g. an eval stage copied by ``--reuse`` into a run whose codes
  were then rebuilt) or that never finished."""
  if stage not in CHECKABLE:
    raise ValueError(f"is_current checks one of {CHECKABLE}, not {stage!r}")
  module = importlib.import_module(STAGES[stage][0])
  config = load_config(workdir)
  try:
    fp = module.fingerprint(config, workdir)
  except FileNotFoundError:  # an upstream stage never finished
    return False
  return artifacts.is_done(workdir, stage, fp, module.OUTPUTS)


def metrics_table(workdir, ks=(5, 10, 20)):
  """Markdown table of the run's metrics; baselines are labelled as such, never as PRORec."""
  rows = []
  results = os.path.join(workdir, "eval", "results.json")
  if os.path.exists(results):
    r = artifacts.load_json(results)
    rows += [("PRORec", split, r[split]) for split in ("valid", "test")]
  base = os.path.join(workdir, "data", "baselines.json")
  if os.path.exists(base):
    for method, res in artifacts.load_json(base).items():
      rows += [(f"{method} (baseline)", split, res[split]) for split in ("valid", "test")]
  cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
  lines = ["| model | split | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
  for model, split, m in rows:
    lines.append(f"| {model} | {split} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
  return "\n".join(lines)
