"""MovieLens-100K in RecBole's atomic format (``ml-100k.inter`` / ``ml-100k.item``).

No k-core filter is applied (every user already has 20+ ratings). Each user's ratings are sorted by
timestamp with a stable sort, so same-second ties keep file order. Users are in order of first
appearance in ``ml-100k.inter`` (the source order of the interface contract; ``user_ids`` keeps the
MovieLens id); items are renumbered 1..N in order of first appearance while walking the users'
sequences (the S3-Rec convention); ``Item.source_id`` keeps the MovieLens id.
"""
import collections
import os

import numpy as np

from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import text

DataError = dataset_lib.DataError
FOLDER = "ml-100k"


def _rows(path):
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (is data.root right?)")
  with open(path, encoding="latin-1") as f:
    header = f.readline().rstrip("\n").split("\t")
    names = [h.split(":")[0] for h in header]
    for lineno, line in enumerate(f, start=2):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != len(names):
        raise DataError(f"{path}:{lineno}: expected {len(names)} tab-separated fields, got {len(fields)}")
      yield lineno, dict(zip(names, fields))


def read_movielens(root):
  folder = os.path.join(root, FOLDER)
  inter_path = os.path.join(folder, "ml-100k.inter")
  events = collections.defaultdict(list)
  for lineno, r in _rows(inter_path):
    try:
      events[int(r["user_id"])].append((float(r["timestamp"]), r["item_id"]))
    except ValueError as e:
      raise DataError(f"{inter_path}:{lineno}: malformed value ({e})")
  item_meta = {}
  item_path = os.path.join(folder, "ml-100k.item")
  for _, r in _rows(item_path):
    genres = r.get("class", "").split()
    year = r.get("release_year", "")
    item_meta[r["item_id"]] = (text.clean_title(r.get("movie_title")),
                               text.clean_attributes(([year] if year else []) + genres))
  new_id, sequences, user_ids = {}, [], []
  for user in events:  # first appearance in the file (dicts keep insertion order)
    seq = sorted(events[user], key=lambda e: e[0])  # stable: ties keep file order
    sequences.append(np.array([new_id.setdefault(i, len(new_id) + 1) for _, i in seq], np.int32))
    user_ids.append(str(user))
  items = []
  for source_id in new_id:  # dict order == id order
    if source_id not in item_meta:
      raise DataError(f"{item_path}: no entry for item {source_id} used in {inter_path}")
    title, attrs = item_meta[source_id]
    items.append(dataset_lib.Item(source_id, title, attrs))
  info = dict(sequence_file=inter_path, item_source=item_path, item_text="title + year + genres")
  return dataset_lib.Dataset("ml100k", sequences, user_ids, items, info), inter_path
