"""gap_analysis: buckets, per-bucket metrics, overlap and memory_first; and the bench script end to
end on a run whose model is the Markov chain."""
import json
import os
import sys

import numpy as np
import pytest

from configs import prorec
from conftest import load_script
from prorec_jax import artifacts
from prorec_jax import baselines
from prorec_jax import gap_analysis
from prorec_jax import metrics
from prorec_jax import pipeline
from prorec_jax.data import dataset as dataset_lib


def _seqs():
  # Training part (each sequence without its last two items): 1->2, 2->3, 3->7, 5->6, 6->1, 1->4.
  return [np.array(s, np.int32) for s in (
      [1, 2, 3, 7, 1, 2],  # test pair 1 -> 2: seen transition
      [5, 6, 1, 4, 5, 3],  # test pair 5 -> 3: 3 is known, never after 5
      [2, 3, 9],  # test pair 3 -> 9: 9 appears nowhere else
      [1, 4, 6])]  # test pair 4 -> 6: 6 is known, never after 4


def test_buckets_are_judged_on_the_training_part():
  np.testing.assert_array_equal(gap_analysis.buckets(_seqs(), 9, holdout=1), [0, 1, 2, 1])
  # Validation: pairs 7 -> 1 (unseen, 1 known), 4 -> 5 (unseen), 2 -> 3 (seen: user 0), 1 -> 4.
  np.testing.assert_array_equal(gap_analysis.buckets(_seqs(), 9, holdout=2), [1, 1, 0, 0])


def test_breakdown_shares_average_back_to_the_overall_metric():
  rng = np.random.default_rng(0)
  targets = rng.integers(1, 30, 200)
  topk = np.stack([rng.permutation(np.arange(1, 30))[:20] for _ in targets])
  bucket_of = rng.integers(0, 3, 200)
  table = gap_analysis.breakdown(dict(m=topk), targets, bucket_of)
  assert table["all"]["m"] == metrics.from_topk(topk, targets, (10, 20))
  assert sum(table[b]["share"] for b in gap_analysis.BUCKETS) == pytest.approx(1.0)
  for key in ("recall@10", "ndcg@20"):
    avg = sum(table[b]["share"] * table[b]["m"][key] for b in gap_analysis.BUCKETS)
    assert avg == pytest.approx(table["all"]["m"][key])


def test_breakdown_keeps_empty_buckets_without_metrics():
  table = gap_analysis.breakdown(dict(m=np.arange(1, 21)[None]), np.array([3]), np.array([0]))
  assert table["cold_target"] == dict(users=0, share=0.0)


def test_overlap_partitions_the_users():
  targets = np.array([1, 2, 3, 4])
  a = np.array([[1, 9], [2, 9], [9, 8], [9, 8]])  # hits users 0, 1
  b = np.array([[1, 9], [9, 8], [3, 9], [9, 8]])  # hits users 0, 2
  o = gap_analysis.overlap(a, b, targets, k=2)
  assert o == dict(both=0.25, only_a=0.25, only_b=0.25, either=0.75)


def test_memory_first_puts_frequent_successors_ahead_of_the_model_list():
  # Training part: 1->4 (x2), 4->1, 1->2, 5->1; 3 and 8 never lead on. Test query: the 2nd-last.
  seqs = [np.array(s, np.int32) for s in ([1, 4, 1, 2, 3, 9], [5, 1, 4, 4, 9], [6, 5, 9],
                                          [7, 1, 9], [8, 9])]
  model = np.tile(np.array([[8, 2, 4, 7, 5]]), (5, 1))
  out = gap_analysis.memory_first(model, seqs, 9, holdout=1, cap=2)
  np.testing.assert_array_equal(out[0], model[0])  # 3: never followed
  np.testing.assert_array_equal(out[1], [1, 8, 2, 4, 7])  # 4 -> 1
  np.testing.assert_array_equal(out[2], [1, 8, 2, 4, 7])  # 5 -> 1
  np.testing.assert_array_equal(out[3], [4, 2, 8, 7, 5])  # 1 -> 4 (x2), 1 -> 2; no repeats
  np.testing.assert_array_equal(out[4], model[4])
  np.testing.assert_array_equal(gap_analysis.memory_first(model, seqs, 9, 1, cap=1)[3],
                                [4, 8, 2, 7, 5])
  np.testing.assert_array_equal(gap_analysis.memory_first(model, seqs, 9, 1, cap=0), model)
  # The validation query (3rd-last) of user 3 is 7, never followed in the training part.
  np.testing.assert_array_equal(gap_analysis.memory_first(model, seqs, 9, 2, cap=2)[3], model[3])
  assert all(len(set(r)) == len(r) for r in out)


def test_bench_script_on_a_run_whose_model_is_the_markov_chain(tmp_path):
  """The script end to end, with the eval stage's lists replaced by markov_train's own lists:
  the two models then agree in every bucket, and memory_first (which puts the same successors
  first, in the same order) changes nothing."""
  config = prorec.get_config("dataset=synthetic,runlocal=True")
  wd = str(tmp_path / "run")
  pipeline.run("data", config, wd)
  ds = dataset_lib.load(wd)
  for split, h in (("valid", 2), ("test", 1)):
    artifacts.save_npy(os.path.join(wd, "eval", f"topk_{split}.npy"), baselines.recommend(
        ds.sequences, ds.num_items, h, "markov", 20, fit_holdout=2).astype(np.int32))
  bench = load_script("benchmarks/bench_gap_breakdown.py")
  out = tmp_path / "gap.json"
  argv, sys.argv = sys.argv, ["bench_gap_breakdown.py", f"--workdir={wd}", f"--out={out}"]
  try:
    bench.main()
  finally:
    sys.argv = argv
  rec = json.loads(out.read_text())
  assert rec["kind"] == "gap_breakdown" and rec["dataset"] == "synthetic"
  for name, e in rec["buckets"].items():
    if e["users"]:
      assert e["prorec"] == e["markov"] == e["memory_first"], name
  assert rec["overlap_at10"]["only_a"] == rec["overlap_at10"]["only_b"] == 0.0
  assert rec["buckets"]["seen_transition"]["markov"]["recall@10"] > 0.5  # planted transitions
