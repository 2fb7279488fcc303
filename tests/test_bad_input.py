"""Bad input fails with a message naming the file and line, or is handled and counted."""
import json
import os

import pytest

from configs import prorec
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import stage

DataError = dataset_lib.DataError


def _write_beauty(root, seq_lines, items=None):
  folder = root / "amazon2014" / "beauty"
  (folder / "derived").mkdir(parents=True, exist_ok=True)
  (folder / "Beauty.txt").write_text("".join(l + "\n" for l in seq_lines))
  items = items if items is not None else [
      dict(id=i, asin=f"A{i}", title_keywords=f"thing {i}", attribute_names=["Brand", "Cat"])
      for i in range(1, 6)]
  (folder / "derived" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
  return folder


def _config(root, **data):
  c = prorec.get_config("dataset=beauty")
  with c.unlocked():
    c.data.root = str(root)
    c.data.update(data)
  return c


GOOD = ["1 1 2 3 4", "2 2 3 5", "3 5 4 1"]


def test_good_fixture_reads(tmp_path):
  _write_beauty(tmp_path, GOOD)
  ds = stage.read(_config(tmp_path))
  assert ds.num_users == 3 and ds.num_items == 5


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match=r"Beauty\.txt: file not found"):
    stage.read(_config(tmp_path))


def test_malformed_line(tmp_path):
  _write_beauty(tmp_path, GOOD[:1] + ["2 2 x 5"])
  with pytest.raises(DataError, match=r"Beauty\.txt:2: malformed line"):
    stage.read(_config(tmp_path))


def test_empty_line(tmp_path):
  _write_beauty(tmp_path, GOOD[:2] + [""])
  with pytest.raises(DataError, match=r"Beauty\.txt:3: empty line"):
    stage.read(_config(tmp_path))


def test_item_id_out_of_range(tmp_path):
  _write_beauty(tmp_path, GOOD[:2] + ["3 1 2 9"])
  with pytest.raises(DataError, match=r"Beauty\.txt:3: item id 9 out of range 1\.\.5"):
    stage.read(_config(tmp_path))


def test_short_user_errors_or_is_dropped_and_counted(tmp_path):
  _write_beauty(tmp_path, GOOD + ["4 1 2"] + ["5 2 3 4"], )
  with pytest.raises(DataError, match=r"Beauty\.txt:4: user '4' has 2 interactions"):
    stage.read(_config(tmp_path))
  ds = stage.read(_config(tmp_path, short_users="drop"))
  assert ds.user_ids == ["1", "2", "3", "5"]
  assert ds.info["dropped_short_users"] == 1


def test_empty_item_text(tmp_path):
  items = [dict(id=i, asin=f"A{i}", title_keywords=f"thing {i}") for i in range(1, 6)]
  items[3] = dict(id=4, asin="A4", title_keywords="title categories", attribute_names=[None])
  _write_beauty(tmp_path, GOOD, items)
  with pytest.raises(DataError, match=r"items\.jsonl:4: item A4 has empty text"):
    stage.read(_config(tmp_path, empty_text="error"))
  ds = stage.read(_config(tmp_path, empty_text="placeholder"))
  assert ds.item_text(4) == "item A4" and ds.info["items_with_placeholder_text"] == 1


def test_item_table_out_of_order(tmp_path):
  items = [dict(id=i, asin=f"A{i}", title_keywords="t") for i in (1, 2, 4, 3, 5)]
  _write_beauty(tmp_path, GOOD, items)
  with pytest.raises(DataError, match=r"items\.jsonl:3: expected item id 3"):
    stage.read(_config(tmp_path))


def test_malformed_item_json(tmp_path):
  folder = _write_beauty(tmp_path, GOOD)
  with open(folder / "derived" / "items.jsonl", "a") as f:
    f.write("{not json\n")
  with pytest.raises(DataError, match=r"items\.jsonl:6: malformed JSON"):
    stage.read(_config(tmp_path))


def test_empty_dataset(tmp_path):
  _write_beauty(tmp_path, [])
  with pytest.raises(DataError, match="no users"):
    stage.read(_config(tmp_path))


def test_bad_option_values(tmp_path):
  _write_beauty(tmp_path, GOOD)
  with pytest.raises(ValueError, match="short_users"):
    stage.read(_config(tmp_path, short_users="ignore"))
  with pytest.raises(ValueError, match="data.format"):
    stage.read(_config(tmp_path, format="csv"))


def test_unknown_dataset_name_in_config():
  c = prorec.get_config("dataset=beauty")
  with c.unlocked():
    c.data.name = "amazon"
  with pytest.raises(ValueError, match="unknown dataset 'amazon'"):
    stage.read(c)


def test_relative_root_resolves_from_repo():
  assert stage.resolve_root("../shared/data") == os.path.normpath(
      os.path.join(stage.REPO_ROOT, "..", "shared", "data"))
  assert stage.resolve_root("/abs/path") == "/abs/path"
