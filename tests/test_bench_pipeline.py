"""benchmarks/bench_pipeline.py: a record names, by content, the stage outputs it reused."""
import json
import shutil

import numpy as np

from conftest import load_script

bench = load_script("benchmarks/bench_pipeline.py")


def _stage(workdir, stage, done=True, **arrays):
  d = workdir / stage
  d.mkdir(parents=True)
  if done:
    (d / "done.json").write_text('{"fingerprint": "f"}')
  for name, value in arrays.items():
    np.save(d / f"{name}.npy", value)
  return d


def test_upstream_digests_tell_identical_stage_outputs_from_rebuilt_ones(tmp_path):
  a = tmp_path / "a"
  _stage(a, "data", seqs=np.arange(6))
  align = _stage(a, "align", integrated=np.ones((4, 3), np.float32))
  (align / "checkpoints").mkdir()
  np.save(align / "checkpoints" / "w.npy", np.zeros(3))
  _stage(a, "codes", done=False, codes=np.zeros((4, 2), np.int32))  # unfinished: not consumed
  digests = bench.upstream_digests(str(a), ["codes", "train", "eval"])
  assert sorted(digests) == ["align", "data"]
  assert sorted(bench.upstream_digests(str(a), ["align", "codes"])) == ["data"]  # rerun here

  b = tmp_path / "b"
  shutil.copytree(a, b)
  np.save(b / "align" / "checkpoints" / "w.npy", np.ones(3))  # checkpoints are not outputs
  assert bench.upstream_digests(str(b), ["codes"]) == digests
  rebuilt = np.ones((4, 3), np.float32)
  rebuilt[2, 1] = np.nextafter(np.float32(1), np.float32(2))  # one ulp, as a rebuild can give
  np.save(b / "align" / "integrated.npy", rebuilt)
  changed = bench.upstream_digests(str(b), ["codes"])
  assert changed["data"] == digests["data"] and changed["align"] != digests["align"]


def test_a_stage_log_is_read_whole_and_missing_logs_are_none(tmp_path):
  _stage(tmp_path, "train")
  rows = [{"epoch": 1, "valid": {"ndcg@10": 0.02}}, {"epoch": 2, "valid": {"ndcg@10": 0.03}}]
  (tmp_path / "train" / "train_log.jsonl").write_text(
      "\n".join(json.dumps(r) for r in rows) + "\n")
  assert bench._log(str(tmp_path), "train") == rows
  assert bench._log(str(tmp_path), "align") is None
