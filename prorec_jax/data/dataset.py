"""The in-memory dataset every reader produces, and its on-disk form in ``workdir/data``.

Item ids are 1..num_items (0 is padding); users keep the order of the source file, so row ``u`` of
every per-user artifact is the ``u``-th user of the source.
"""
import dataclasses
import json
import os

import numpy as np

from prorec_jax import artifacts


class DataError(ValueError):
  """Bad input data; the message names the file and, where there is one, the line."""


@dataclasses.dataclass(frozen=True)
class Item:
  source_id: str
  title: str
  attributes: tuple = ()  # brand and category path (or genres, business categories, ...)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  sequences: list  # per user: int32 array of item ids, oldest first
  user_ids: list  # per user: the source's user id
  items: list  # items[i - 1] describes item id i
  info: dict = dataclasses.field(default_factory=dict)  # reader notes (drops, sources) for stats

  @property
  def num_users(self):
    return len(self.sequences)

  @property
  def num_items(self):
    return len(self.items)

  def item_text(self, item_id, fields=("title", "attributes")):
    return compose_text(self.items[item_id - 1], fields)


def compose_text(item, fields=("title", "attributes")):
  parts = []
  if "title" in fields and item.title:
    parts.append(item.title)
  if "attributes" in fields and item.attributes:
    parts.append(", ".join(item.attributes))
  unknown = set(fields) - {"title", "attributes"}
  if unknown:
    raise ValueError(f"unknown item text fields {sorted(unknown)}; use 'title' and/or 'attributes'")
  return ". ".join(parts)


def validate(ds, source, min_interactions=3, short_users="error", one_line_per_user=True,
             empty_text="error"):
  """Checks ids, lengths and item text; returns ``ds`` with short users dropped when asked.

  ``source`` names the sequence file in error messages; with ``one_line_per_user`` user ``u`` is
  reported at line ``u + 1`` of it, otherwise by its id.
  """
  if ds.num_items == 0 or ds.num_users == 0:
    raise DataError(f"{source}: empty dataset ({ds.num_users} users, {ds.num_items} items)")
  keep = []
  for u, seq in enumerate(ds.sequences):
    where = f"{source}:{u + 1}" if one_line_per_user else f"{source} (user {ds.user_ids[u]})"
    bad = seq[(seq < 1) | (seq > ds.num_items)]
    if bad.size:
      raise DataError(f"{where}: item id {int(bad[0])} out of range 1..{ds.num_items}")
    if len(seq) < min_interactions:
      if short_users == "drop":
        continue
      raise DataError(
          f"{where}: user {ds.user_ids[u]!r} has {len(seq)} interactions; leave-one-out "
          f"needs at least {min_interactions} (set data.short_users='drop' to drop such users)")
    keep.append(u)
  info = dict(ds.info, dropped_short_users=ds.num_users - len(keep))
  if len(keep) < ds.num_users:
    ds = dataclasses.replace(
        ds, sequences=[ds.sequences[u] for u in keep], user_ids=[ds.user_ids[u] for u in keep],
        info=info)
  else:
    ds = dataclasses.replace(ds, info=info)
  if not keep:
    raise DataError(f"{source}: no user has {min_interactions} or more interactions")
  return _check_texts(ds, empty_text)


def _check_texts(ds, empty_text):
  """Empty item text is an error, or (``empty_text='placeholder'``) becomes "item <source id>"."""
  if empty_text not in ("error", "placeholder"):
    raise ValueError(f"data.empty_text must be 'error' or 'placeholder', got {empty_text!r}")
  items, replaced = list(ds.items), 0
  src = ds.info.get("item_source", "item metadata")
  for i, item in enumerate(items, start=1):
    if compose_text(item).strip():
      continue
    if empty_text == "error":
      where = f"{src}:{i}" if src.endswith(".jsonl") else f"{src} (item {i})"
      raise DataError(f"{where}: item {item.source_id} has empty text "
                      "(set data.empty_text='placeholder' to name it by its id)")
    items[i - 1] = dataclasses.replace(item, title=f"item {item.source_id}")
    replaced += 1
  return dataclasses.replace(ds, items=items, info=dict(ds.info, items_with_placeholder_text=replaced))


def stats(ds):
  lengths = np.array([len(s) for s in ds.sequences])
  num_interactions = int(lengths.sum())
  seen = np.unique(np.concatenate(ds.sequences))
  return dict(
      dataset=ds.name, num_users=ds.num_users, num_items=ds.num_items,
      num_interactions=num_interactions, num_items_interacted=int(seen.size),
      density=num_interactions / (ds.num_users * ds.num_items),
      seq_len_mean=float(lengths.mean()), seq_len_min=int(lengths.min()),
      seq_len_max=int(lengths.max()),
      **{k: v for k, v in ds.info.items() if isinstance(v, (str, int, float, bool))})


SEQUENCES = "sequences.npz"
ITEMS = "items.jsonl"
STATS = "stats.json"


def save(ds, out_dir):
  lengths = np.array([len(s) for s in ds.sequences], np.int64)
  artifacts.save_npz(
      os.path.join(out_dir, SEQUENCES), items=np.concatenate(ds.sequences).astype(np.int32),
      offsets=np.concatenate([[0], np.cumsum(lengths)]), user_ids=np.array(ds.user_ids, dtype=str))
  artifacts.save_jsonl(os.path.join(out_dir, ITEMS), [
      dict(id=i, source_id=it.source_id, title=it.title, attributes=list(it.attributes))
      for i, it in enumerate(ds.items, start=1)])
  planted = {k: np.asarray(v) for k, v in ds.info.items() if k.startswith("planted_")}
  if planted:  # ground truth of the synthetic generator, for analysis
    artifacts.save_npz(os.path.join(out_dir, "planted.npz"), **planted)
  artifacts.save_json(os.path.join(out_dir, STATS), stats(ds))


def load(workdir):
  """Loads the dataset the data stage wrote into ``workdir/data``."""
  d = os.path.join(workdir, "data")
  path = os.path.join(d, SEQUENCES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage=data first")
  with np.load(path) as z:
    flat, offsets, user_ids = z["items"], z["offsets"], z["user_ids"].tolist()
  sequences = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  with open(os.path.join(d, ITEMS)) as f:
    rows = [json.loads(line) for line in f]
  items = [Item(r["source_id"], r["title"], tuple(r["attributes"])) for r in rows]
  st = artifacts.load_json(os.path.join(d, STATS))
  return Dataset(st["dataset"], sequences, user_ids, items)
