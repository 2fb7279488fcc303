"""The raw McAuley 2014 reader on a tiny fixture in that format, written here."""
import gzip
import json

import numpy as np
import pytest

from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import mcauley

ITEMS = [f"I{i}" for i in range(6)]


def _write_fixture(folder, category="Beauty"):
  reviews = [dict(reviewerID="NOISE", asin="I0", unixReviewTime=3)]  # 1 review: 5-core drops it
  # U0's raw order and times: the stable sort must give I4, I1, I2 (tie kept in file order), I0, I3, I5.
  for asin, t in zip(["I3", "I1", "I2", "I0", "I5", "I4"], [5, 1, 1, 2, 9, 0]):
    reviews.append(dict(reviewerID="U0", asin=asin, unixReviewTime=t))
  for u in range(1, 6):
    for i, asin in enumerate(ITEMS):
      reviews.append(dict(reviewerID=f"U{u}", asin=asin, unixReviewTime=100 + i))
  reviews.append(dict(reviewerID="U3", asin="RARE", unixReviewTime=50))  # item with 1 review
  folder.mkdir(parents=True, exist_ok=True)
  with gzip.open(folder / f"reviews_{category}_5.json.gz", "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in reviews)
  with gzip.open(folder / f"meta_{category}.json.gz", "wt") as f:  # Python literals, as McAuley's
    for i, asin in enumerate(ITEMS):
      meta = {"asin": asin, "title": f"Product {i}", "brand": "Acme",
              "categories": [["Beauty", "Nails"], ["Beauty", "Tools"]]}
      if i == 2:
        del meta["title"]
      f.write(repr(meta) + "\n")


def test_reads_filters_sorts_and_numbers_like_s3rec(tmp_path):
  _write_fixture(tmp_path)
  ds, source = mcauley.read_raw("beauty", str(tmp_path))
  assert source.endswith("reviews_Beauty_5.json.gz")
  assert ds.user_ids == ["U0", "U1", "U2", "U3", "U4", "U5"]  # NOISE filtered out
  assert ds.num_items == 6  # RARE filtered out
  assert [it.source_id for it in ds.items] == ["I4", "I1", "I2", "I0", "I3", "I5"]
  np.testing.assert_array_equal(ds.sequences[0], [1, 2, 3, 4, 5, 6])
  # Other users review I0..I5 in time order: ids of I0..I5 are 4, 2, 3, 5, 1, 6.
  np.testing.assert_array_equal(ds.sequences[1], [4, 2, 3, 5, 1, 6])
  assert ds.item_text(4) == "Product 0. Acme, Beauty, Nails, Tools"
  assert ds.item_text(3) == "Acme, Beauty, Nails, Tools"  # I2 has no title
  assert dataset_lib.stats(ds)["num_interactions"] == 36


def test_k_core_is_iterative():
  # Dropping item b (1 review) leaves user y with 1 interaction, so y goes too.
  events = [("x", "a", 0), ("x", "c", 0), ("y", "a", 0), ("y", "b", 0), ("z", "a", 0), ("z", "c", 0)]
  assert mcauley.k_core(events, 2) == [("x", "a", 0), ("x", "c", 0), ("z", "a", 0), ("z", "c", 0)]


def test_offline_error_names_the_files(tmp_path):
  with pytest.raises(dataset_lib.DataError, match=r"reviews_Toys_and_Games_5\.json\.gz.*data\.download"):
    mcauley.read_raw("toys", str(tmp_path / "empty"))


def test_download_fetches_missing_files(tmp_path, monkeypatch):
  mirror, cache = tmp_path / "mirror", tmp_path / "cache"
  _write_fixture(mirror, "Sports_and_Outdoors")
  monkeypatch.setattr(mcauley, "BASE_URL", mirror.as_uri() + "/")
  ds, _ = mcauley.read_raw("sports", str(cache), download=True)
  assert ds.num_users == 6
  assert sorted(p.name for p in cache.iterdir()) == [
      "meta_Sports_and_Outdoors.json.gz", "reviews_Sports_and_Outdoors_5.json.gz"]


def test_malformed_review_names_line(tmp_path):
  with gzip.open(tmp_path / "reviews_Beauty_5.json.gz", "wt") as f:
    f.write(json.dumps(dict(reviewerID="a", asin="b", unixReviewTime=1)) + "\n")
    f.write(json.dumps(dict(reviewerID="a", asin="b")) + "\n")
  with gzip.open(tmp_path / "meta_Beauty.json.gz", "wt") as f:
    f.write("{}\n")
  with pytest.raises(dataset_lib.DataError, match=r"reviews_Beauty_5\.json\.gz:2: missing or bad field"):
    mcauley.read_raw("beauty", str(tmp_path))


def test_raw_format_through_the_data_stage(tmp_path):
  from configs import prorec
  from prorec_jax.data import stage
  _write_fixture(tmp_path)
  c = prorec.get_config("dataset=beauty")
  with c.unlocked():
    c.data.update(format="raw", raw_dir=str(tmp_path))
  ds = stage.read(c)
  assert ds.num_users == 6 and ds.info["core"] == 5
