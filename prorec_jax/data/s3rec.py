"""Readers for the S3-Rec/P5 releases in ``data.root``: Amazon 2014 Beauty/Sports/Toys and Yelp 2019.

Sequence files hold one user per line, ``user_id item_1 ... item_n``, oldest first.
"""
import json
import os

import numpy as np

from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import text

DataError = dataset_lib.DataError

AMAZON = {  # dataset -> (folder, canonical sequence file)
    "beauty": ("amazon2014/beauty", "Beauty.txt"),
    "sports": ("amazon2014/sports", "Sports_and_Outdoors.txt"),
    # The P5-id file is canonical for toys: it is the one that datamaps.json maps to ASINs.
    "toys": ("amazon2014/toys", "sequential.txt"),
}
YELP = ("yelp2019_s3rec", "Yelp.txt")


def _require(path):
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (is data.root right? it is resolved from the repo root)")
  return path


def read_sequences(path):
  """Parses a sequence file into (user_ids, sequences); errors name the file and line."""
  user_ids, sequences = [], []
  with open(_require(path)) as f:
    for lineno, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        raise DataError(f"{path}:{lineno}: empty line")
      try:
        items = np.array([int(x) for x in fields[1:]], dtype=np.int64)
      except ValueError as e:
        raise DataError(f"{path}:{lineno}: malformed line ({e}); expected 'user item item ...'")
      user_ids.append(fields[0])
      sequences.append(items.astype(np.int32))
  if not sequences:
    raise DataError(f"{path}: no users")
  return user_ids, sequences


def _read_jsonl(path):
  rows = []
  with open(_require(path)) as f:
    for lineno, line in enumerate(f, start=1):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})")
  return rows


def _check_item_ids(rows, path):
  for lineno, r in enumerate(rows, start=1):
    if r.get("id") != lineno:
      raise DataError(f"{path}:{lineno}: expected item id {lineno}, found {r.get('id')!r}")


def _amazon_items(folder):
  """Item records: real titles from derived/item_text.jsonl when present, else title keywords."""
  derived = os.path.join(folder, "derived", "items.jsonl")
  rows = _read_jsonl(derived)
  _check_item_ids(rows, derived)
  titles_path = os.path.join(folder, "derived", "item_text.jsonl")
  titles = {}
  if os.path.exists(titles_path):
    titles = {r["id"]: r.get("title", "") for r in _read_jsonl(titles_path)}
  items = []
  for r in rows:
    title = titles.get(r["id"]) or r.get("title_keywords") or ""
    items.append(dataset_lib.Item(
        r["asin"], text.clean_title(title), text.clean_attributes(r.get("attribute_names"))))
  source = titles_path if titles else derived
  return items, source


def read_amazon(name, root):
  folder, seq_file = AMAZON[name]
  folder = os.path.join(root, folder)
  seq_path = os.path.join(folder, seq_file)
  user_ids, sequences = read_sequences(seq_path)
  items, item_source = _amazon_items(folder)
  info = dict(sequence_file=seq_path, item_source=item_source,
              item_text="title keywords + attribute names" if "items.jsonl" in item_source
              else "titles + attribute names")
  return dataset_lib.Dataset(name, sequences, user_ids, items, info), seq_path


def read_yelp(root):
  folder = os.path.join(root, YELP[0])
  seq_path = os.path.join(folder, YELP[1])
  user_ids, sequences = read_sequences(seq_path)
  meta_path = os.path.join(folder, "Yelp.item.json")
  with open(_require(meta_path)) as f:
    meta = json.load(f)
  asins = {}
  maps_path = os.path.join(folder, "datamaps.json")
  if os.path.exists(maps_path):
    with open(maps_path) as f:
      asins = json.load(f).get("id2item", {})
  items = []
  for i in range(len(meta)):  # keys are 0-based: key k is item k + 1 of Yelp.txt
    row = meta.get(str(i))
    if row is None:
      raise DataError(f"{meta_path}: no entry for key {i!r} (item {i + 1})")
    cats = (row.get("description") or "").split(",")
    items.append(dataset_lib.Item(asins.get(str(i + 1), str(i + 1)), text.clean_title(row.get("title")),
                                  text.clean_attributes(cats)))
  info = dict(sequence_file=seq_path, item_source=meta_path, item_text="business name + categories")
  return dataset_lib.Dataset("yelp", sequences, user_ids, items, info), seq_path
