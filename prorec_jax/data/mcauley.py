"""Raw McAuley Amazon 2014 files: ``reviews_<Category>_5.json.gz`` + ``meta_<Category>.json.gz``.

Reproduces the S3-Rec preprocessing: every review is an interaction; users get ids in order of first
appearance in the review file, each user's items are stably sorted by ``unixReviewTime``, a 5-core
filter is applied, and items get ids in order of first appearance while walking the sequences.
"""
import ast
import collections
import gzip
import json
import os
import urllib.request

import numpy as np
from absl import logging

from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import text

DataError = dataset_lib.DataError

CATEGORIES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}
BASE_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"


def file_names(name):
  cat = CATEGORIES[name]
  return f"reviews_{cat}_5.json.gz", f"meta_{cat}.json.gz"


def ensure_files(name, raw_dir, download=False):
  """Returns local paths of the two files, downloading them only when asked."""
  raw_dir = os.path.expanduser(raw_dir)
  paths = [os.path.join(raw_dir, f) for f in file_names(name)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing and not download:
    raise DataError(
        f"raw McAuley files missing: {', '.join(missing)}. Put reviews_*_5.json.gz and "
        f"meta_*.json.gz from {BASE_URL} there, or set data.download=True on a machine with network")
  for p in missing:
    url = BASE_URL + os.path.basename(p)
    logging.info("downloading %s", url)
    os.makedirs(raw_dir, exist_ok=True)
    tmp = p + ".part"
    try:
      urllib.request.urlretrieve(url, tmp)
    except OSError as e:
      raise DataError(f"could not download {url} ({e}); fetch it by hand into {raw_dir}")
    os.replace(tmp, p)
  return paths


def _records(path):
  """Yields (lineno, dict); the meta files are Python literals, the review files strict JSON."""
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        yield lineno, json.loads(line)
      except json.JSONDecodeError:
        try:
          yield lineno, ast.literal_eval(line)
        except (ValueError, SyntaxError):
          raise DataError(f"{path}:{lineno}: malformed record")


def k_core(events, k):
  """Iteratively drops users and items with fewer than k interactions."""
  while True:
    users = collections.Counter(u for u, _, _ in events)
    items = collections.Counter(i for _, i, _ in events)
    kept = [e for e in events if users[e[0]] >= k and items[e[1]] >= k]
    if len(kept) == len(events):
      return kept
    events = kept


def read_raw(name, raw_dir, download=False, core=5):
  reviews_path, meta_path = ensure_files(name, raw_dir, download)
  events = []
  for lineno, r in _records(reviews_path):
    try:
      events.append((r["reviewerID"], r["asin"], int(r["unixReviewTime"])))
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{reviews_path}:{lineno}: missing or bad field {e}")
  events = k_core(events, core)
  by_user = collections.OrderedDict()
  for u, i, t in events:
    by_user.setdefault(u, []).append((t, i))
  item_id, sequences = {}, []
  for u, evs in by_user.items():
    evs.sort(key=lambda e: e[0])  # stable: same-day ties keep file order
    sequences.append(np.array([item_id.setdefault(i, len(item_id) + 1) for _, i in evs], np.int32))
  meta = {}
  for _, r in _records(meta_path):
    if r.get("asin") in item_id:
      cats = [c for path in r.get("categories") or [] for c in path]
      meta[r["asin"]] = (text.clean_title(r.get("title")),
                         text.clean_attributes([r.get("brand")] + cats))
  items = [dataset_lib.Item(asin, *meta.get(asin, ("", ()))) for asin in item_id]
  info = dict(sequence_file=reviews_path, item_source=meta_path,
              item_text="title + brand + categories", core=core)
  return dataset_lib.Dataset(name, sequences, list(by_user), items, info), reviews_path
