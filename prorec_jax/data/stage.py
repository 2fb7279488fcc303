"""The ``data`` stage: read the configured source, validate, write ``workdir/data``.

Outputs: ``sequences.npz`` (users in source order), ``items.jsonl`` (item fields), ``stats.json``
and ``baselines.json`` (popularity and Markov full-ranking metrics, a floor for every model).
"""
import os
import time

from absl import logging

from prorec_jax import artifacts
from prorec_jax import baselines
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import mcauley
from prorec_jax.data import movielens
from prorec_jax.data import s3rec
from prorec_jax.data import split as split_lib
from prorec_jax.data import synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUTS = (dataset_lib.SEQUENCES, dataset_lib.ITEMS, dataset_lib.STATS, "baselines.json")


def resolve_root(root):
  root = os.path.expanduser(root)
  return root if os.path.isabs(root) else os.path.normpath(os.path.join(REPO_ROOT, root))


def read(config):
  """Reads and validates the configured dataset."""
  d = config.data
  one_line_per_user = True
  if d.name == "synthetic":
    ds, source = synthetic.generate(**d.synthetic.to_dict(), seed=config.seed), "synthetic"
  elif d.name in s3rec.AMAZON and d.format == "raw":
    ds, source = mcauley.read_raw(d.name, d.raw_dir, d.download)
    one_line_per_user = False
  elif d.name in s3rec.AMAZON:
    if d.format != "s3rec":
      raise ValueError(f"data.format must be 's3rec' or 'raw', got {d.format!r}")
    ds, source = s3rec.read_amazon(d.name, resolve_root(d.root))
  elif d.name == "yelp":
    ds, source = s3rec.read_yelp(resolve_root(d.root))
  elif d.name == "ml100k":
    ds, source = movielens.read_movielens(resolve_root(d.root))
    one_line_per_user = False
  else:
    raise ValueError(f"unknown dataset {d.name!r}")
  if d.short_users not in ("error", "drop"):
    raise ValueError(f"data.short_users must be 'error' or 'drop', got {d.short_users!r}")
  return dataset_lib.validate(ds, source, d.min_user_interactions, d.short_users, one_line_per_user,
                              d.empty_text)


def fingerprint(config):
  sections = ["data"] + (["seed"] if config.data.name == "synthetic" else [])
  return artifacts.fingerprint(config, sections)


def run(config, workdir):
  out = artifacts.stage_dir(workdir, "data")
  fp = fingerprint(config)
  if not artifacts.begin(workdir, "data", fp, OUTPUTS):
    return
  t0 = time.time()
  ds = read(config)
  split = split_lib.leave_one_out(ds.sequences, config.data.max_history)
  ds = dataset_lib.Dataset(ds.name, ds.sequences, ds.user_ids, ds.items, dict(
      ds.info, num_train_examples=len(split.train), max_history=config.data.max_history))
  dataset_lib.save(ds, out)
  st = dataset_lib.stats(ds)
  logging.info("data: %s: %d users, %d items, %d interactions, %d training examples (%.1fs)",
               ds.name, st["num_users"], st["num_items"], st["num_interactions"],
               len(split.train), time.time() - t0)
  base = baselines.evaluate(ds.sequences, ds.num_items)
  artifacts.save_json(os.path.join(out, "baselines.json"), base)
  for method, res in base.items():
    logging.info("data: baseline %-10s valid recall@10 %.4f ndcg@10 %.4f | test recall@10 %.4f "
                 "ndcg@10 %.4f", method, res["valid"]["recall@10"], res["valid"]["ndcg@10"],
                 res["test"]["recall@10"], res["test"]["ndcg@10"])
  artifacts.mark_done(workdir, "data", fp, seconds=time.time() - t0)
