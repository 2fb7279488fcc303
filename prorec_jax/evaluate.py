"""The ``eval`` stage: constrained beam search from the checkpoint chosen on validation.

Scores every user on validation and, once, on test (full ranking over the catalog, one target per
user). Outputs in ``workdir/eval``: results.json (metrics, invalid/duplicate rates, beam vs
exhaustive agreement on a user sample, seed, config, commit), topk_valid.npy and topk_test.npy
(int32 [num_users, max k], rows in source user order, item ids 1..N as in the dataset).
"""
import os
import subprocess
import time

import jax
import numpy as np
from absl import logging

from prorec_jax import artifacts
from prorec_jax import decode
from prorec_jax import generate
from prorec_jax import sharding

STAGE = "eval"
OUTPUTS = ("results.json", "topk_valid.npy", "topk_test.npy")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit(short=False):
  """The repo's HEAD commit, ``-dirty`` when the tree has uncommitted changes."""
  try:
    sha = subprocess.run(["git", "rev-parse"] + (["--short"] if short else []) + ["HEAD"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=10, check=True).stdout.strip()
    return sha + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def list_checks(items_UxK, num_items):
  """(invalid rate, duplicate rate) of returned lists: slots that are not an existing item, and
  repeated items within a user's list."""
  valid = (items_UxK >= 1) & (items_UxK <= num_items)
  srt = np.sort(items_UxK, axis=1)
  dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] > 0)
  return float(1.0 - valid.mean()), float(dup.sum() / items_UxK.size)


def agreement(model, params, hist_BxH, tokens, beam_items_BxK):
  """Share of users whose beam top-k list equals the exhaustive top-k, and mean overlap."""
  ex_items, _ = decode.exhaustive_topk(model, params, hist_BxH, tokens, beam_items_BxK.shape[1])
  same = np.all(ex_items == beam_items_BxK, axis=1)
  overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ex_items, beam_items_BxK)])
  return dict(exact_list_rate=float(same.mean()), topk_overlap=float(overlap),
              users=int(len(hist_BxH)))


def fingerprint(config, workdir):
  return artifacts.fingerprint(config, ["eval", "seed"], workdir, ("data", "codes", "train"))


def run(config, workdir):
  out = artifacts.stage_dir(workdir, STAGE)
  fp = fingerprint(config, workdir)
  if not artifacts.begin(workdir, STAGE, fp, OUTPUTS):
    return
  t0 = time.time()
  ds, split, tables, model, consts, params = generate.load_trained(config, workdir)
  tokens = consts["tokens"]
  mesh = sharding.make_mesh()
  params = jax.device_put(params, sharding.replicated(mesh))
  evaluate_fn = generate.evaluator(model, config, tables, tokens, ds.num_items, mesh)
  results = dict(seed=config.seed, commit=commit(), config=config.to_dict(), beam=config.eval.beam,
                 num_users=ds.num_users, num_items=ds.num_items, code_length=model.num_levels,
                 k=model.k)
  for name, ex in (("valid", split.valid), ("test", split.test)):  # test: once, best checkpoint
    t1 = time.time()
    m, items = evaluate_fn(params, ex)
    inv, dup = list_checks(items, ds.num_items)
    results[name] = m
    results[f"{name}_seconds"] = time.time() - t1
    results["invalid_rate"] = max(results.get("invalid_rate", 0.0), inv)
    results["duplicate_rate"] = max(results.get("duplicate_rate", 0.0), dup)
    artifacts.save_npy(os.path.join(out, f"topk_{name}.npy"), items.astype(np.int32))
    logging.info("eval: %s %s (%.0fs, %.0f users/s)", name, m, results[f"{name}_seconds"],
                 len(ex) / results[f"{name}_seconds"])
  n = min(config.eval.check_users, len(split.test))
  if n > 0:  # beam search vs the exhaustive scorer on the first n test users
    hist = split.test.history[:n]
    items, _ = decode.recommend(decode.make_recommender(model, config.eval.beam,
                                                        max(config.eval.topk)),
                                params, hist, tokens, tables["child"], n, ds.num_items)
    results["beam_vs_exhaustive"] = agreement(model, params, hist, tokens, items)
    logging.info("eval: beam vs exhaustive %s", results["beam_vs_exhaustive"])
  base = os.path.join(workdir, "data", "baselines.json")
  if os.path.exists(base):
    results["baselines"] = artifacts.load_json(base)
  results["seconds"] = time.time() - t0
  artifacts.save_json(os.path.join(out, "results.json"), results)
  artifacts.mark_done(workdir, STAGE, fp, seconds=results["seconds"])
  print(f"eval: valid {_fmt(results['valid'])}\neval: test  {_fmt(results['test'])}\n"
        f"eval: invalid rate {results['invalid_rate']}, duplicate rate {results['duplicate_rate']}")


def _fmt(m):
  return " ".join(f"{k}={m[k]:.4f}" for k in sorted(m))
