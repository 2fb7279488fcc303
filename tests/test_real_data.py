"""Statistics of the real releases in ../shared/data (skipped when that folder is absent)."""
import numpy as np
import pytest

from configs import prorec
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import stage


def _read(name, root):
  c = prorec.get_config(f"dataset={name}")
  with c.unlocked():
    c.data.root = root
  return stage.read(c)


@pytest.mark.parametrize("name,users,items,interactions", [
    ("beauty", 22363, 12101, 198502),
    ("sports", 35598, 18357, 296337),
    ("toys", 19412, 11924, 167597),
    ("yelp", 30431, 20033, 316354),
    ("ml100k", 943, 1682, 100000),
])
def test_statistics(data_root, name, users, items, interactions):
  ds = _read(name, data_root)
  st = dataset_lib.stats(ds)
  assert (st["num_users"], st["num_items"], st["num_interactions"]) == (users, items, interactions)
  assert st["num_items_interacted"] == items
  assert all(ds.item_text(i).strip() for i in range(1, items + 1))


def test_beauty_item_text_and_order(data_root):
  ds = _read("beauty", data_root)
  # First line of Beauty.txt is "1 1 2 3 4 5"; item 1 is B004756YJA (OPI nail lacquer).
  assert ds.user_ids[0] == "1"
  np.testing.assert_array_equal(ds.sequences[0], [1, 2, 3, 4, 5])
  assert ds.items[0].source_id == "B004756YJA"
  assert ds.item_text(1) == "nail lacquer simmer and shimmer. OPI, Makeup, Nails, Nail Polish"
  # "Unknown" brand placeholders are dropped; template debris never survives.
  assert "Unknown" not in ds.item_text(3)
  for i in range(1, ds.num_items + 1):
    words = ds.items[i - 1].title.lower().split()
    assert not {"title", "categories", "description", "na"} & set(words)


def test_toys_uses_p5_ids(data_root):
  ds = _read("toys", data_root)
  assert ds.items[0].source_id == "B001RNFQNK"  # P5 datamaps id2item["1"]
  assert ds.info["sequence_file"].endswith("sequential.txt")


def test_sports_placeholder_text_is_counted(data_root):
  ds = _read("sports", data_root)
  # Two sports items have no keywords and no named attributes at all.
  assert ds.info["items_with_placeholder_text"] == 2
  assert ds.item_text(7124) == "item B004ZDL2WI"


def test_yelp_keys_are_zero_based(data_root):
  ds = _read("yelp", data_root)
  assert ds.items[0].title == "The Great Greek"
  assert ds.items[0].attributes == ("Diners", "Greek", "Mediterranean", "Restaurants")


def test_movielens_is_chronological(data_root):
  ds = _read("ml100k", data_root)
  assert ds.user_ids[:3] == ["196", "186", "22"]  # the file's first users: source order, not id order
  with open(f"{data_root}/ml-100k/ml-100k.inter") as f:
    rated = sorted(line.split("\t")[1] for line in list(f)[1:] if line.startswith("196\t"))
  seq = ds.sequences[ds.user_ids.index("196")]
  assert sorted(ds.items[i - 1].source_id for i in seq) == rated  # ids map back to MovieLens ids
  assert all(len(s) >= 20 for s in ds.sequences)
