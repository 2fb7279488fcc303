"""code_structure: the first code level's transition information and the code-Markov recommender,
on sequences whose clusters follow a planted cycle; and the bench script end to end."""
import json
import os

import numpy as np
import pytest

from conftest import load_script
from prorec_jax import code_structure
from prorec_jax import metrics

K = 8  # clusters; cluster c holds the popular item 2c + 1 and the rare item 2c + 2


def _planted(num_users=200, length=6, seed=0):
  """Every step moves to the next cluster (mod K), always through its popular item; the rare
  items occur only as the first item of a few sequences."""
  rng = np.random.default_rng(seed)
  seqs = []
  for u in range(num_users):
    c = rng.integers(K)
    s = [2 * ((c + t) % K) + 1 for t in range(length)]
    if u % 10 == 0:
      s[0] += 1
    seqs.append(np.array(s, np.int32))
  codes = np.array([[-1, -1]] + [[(i - 1) // 2, (i - 1) % 2] for i in range(1, 2 * K + 1)])
  return seqs, codes


def test_planted_cycle_is_found_by_both_figures():
  seqs, codes = _planted()
  n = 2 * K
  bits = code_structure.level1_information(codes, seqs, n, holdout=1, alpha=0.01)
  assert abs(bits - np.log2(K)) < 0.1  # plug-in estimate on held-out pairs: can pass log2 K a bit
  topk = code_structure.code_markov_topk(codes, seqs, n, holdout=1, k=2)
  targets = np.array([s[-1] for s in seqs])
  assert (topk[:, 0] == targets).all()  # next cluster, and its popular item first
  assert (topk[:, 1] == targets + 1).all()  # then the rare item of the same cluster
  assert metrics.from_topk(topk, targets, ks=(1,))["recall@1"] == 1.0


def test_codes_without_structure_carry_no_information():
  seqs, codes = _planted()
  one_cluster = codes.copy()
  one_cluster[1:, 0] = 0
  assert abs(code_structure.level1_information(one_cluster, seqs, 2 * K, holdout=2)) < 1e-12
  walk = [np.random.default_rng(u).integers(K, size=len(s)) * 2 + 1 for u, s in enumerate(seqs)]
  bits = code_structure.level1_information(codes, walk, 2 * K, holdout=2)
  chance = code_structure.chance_information(codes, walk, 2 * K, holdout=2)
  assert bits < 0.3 and abs(bits - chance) < 0.3  # no cycle: no more than shuffled clusters
  planted = code_structure.level1_information(codes, seqs, 2 * K, holdout=2)
  assert code_structure.chance_information(codes, seqs, 2 * K, holdout=2) < planted - 1.0


def test_token_ids_are_only_names():
  seqs, codes = _planted()
  sparse = codes.copy()
  sparse[1:, 0] = codes[1:, 0] * 7 + 3  # unused ids in between, as dead RQ-VAE entries leave
  assert code_structure.num_clusters(sparse) == K
  top4 = lambda *args: code_structure.code_markov_topk(*args, k=4)
  for fn in (code_structure.level1_information, top4):
    np.testing.assert_array_equal(fn(sparse, seqs, 2 * K, 1), fn(codes, seqs, 2 * K, 1))


def test_held_out_items_are_never_counted():
  seqs, codes = _planted()
  for holdout in (1, 2):  # replace the items held out for this split (and the test item)
    moved = [np.concatenate([s[:-holdout], [2 * K] * holdout]) for s in seqs]
    np.testing.assert_array_equal(
        code_structure.code_markov_topk(codes, seqs, 2 * K, holdout, k=4),
        code_structure.code_markov_topk(codes, moved, 2 * K, holdout, k=4))
  first = code_structure._first_tokens(codes, 2 * K)  # pylint: disable=protected-access
  moved = [np.concatenate([s[:-2], [2 * K, 2 * K]]) for s in seqs]
  for a, b in zip(code_structure._fit(first, seqs, 0.5), code_structure._fit(first, moved, 0.5)):  # pylint: disable=protected-access
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_rejected():
  seqs, codes = _planted()
  with pytest.raises(ValueError, match="num_items"):
    code_structure.level1_information(codes[1:], seqs, 2 * K, holdout=1)
  with pytest.raises(ValueError, match="holdout"):
    code_structure.code_markov_topk(codes, seqs, 2 * K, holdout=3)
  with pytest.raises(ValueError, match="top-20"):
    code_structure.code_markov_topk(codes, seqs, 2 * K, holdout=1)
  with pytest.raises(ValueError, match="alpha"):
    code_structure.level1_information(codes, seqs, 2 * K, holdout=1, alpha=0.0)
  with pytest.raises(ValueError, match="at least 3"):
    code_structure.level1_information(codes, seqs + [np.array([1, 3])], 2 * K, holdout=1)
  with pytest.raises(ValueError, match="item 0"):
    code_structure.code_markov_topk(codes, seqs + [np.array([0, 1, 3])], 2 * K, holdout=1)
  bad = codes.copy()
  bad[3, 0] = -1
  with pytest.raises(ValueError, match="negative"):
    code_structure.level1_information(bad, seqs, 2 * K, holdout=1)


def _bench():
  return load_script("benchmarks/bench_code_structure.py")


def _finish(wd, stage, module, config):
  """Marks ``stage`` finished under ``config`` (its outputs as empty files where missing)."""
  from prorec_jax import artifacts
  os.makedirs(os.path.join(wd, stage), exist_ok=True)
  for name in module.OUTPUTS:
    if not os.path.exists(os.path.join(wd, stage, name)):
      open(os.path.join(wd, stage, name), "w").close()
  artifacts.mark_done(wd, stage, module.fingerprint(config, wd))


def test_bench_script_on_identity_and_single_cluster_codes(tmp_path):
  """Identity codes (every item its own first-level cluster) make the code-Markov recommender an
  item-level Markov chain, which finds the synthetic set's planted transitions; one cluster for
  all items leaves only popularity and no information. Stage II results are read only from a
  current eval stage, and stale codes are refused."""
  import shutil
  import sys
  from configs import prorec
  from prorec_jax import artifacts
  from prorec_jax import baselines
  from prorec_jax import codes as codes_lib
  from prorec_jax import evaluate
  from prorec_jax import generate
  from prorec_jax import pipeline
  from prorec_jax.data import dataset as dataset_lib
  config = prorec.get_config("dataset=synthetic,runlocal=True")
  config.codes.input = "semantic"  # upstream: embed, which the test marks finished
  ident, one = str(tmp_path / "ident"), str(tmp_path / "one")
  pipeline.run("data", config, ident)
  artifacts.mark_done(ident, "embed", "fabricated")
  artifacts.mark_done(ident, "align", "fabricated")  # read by Stage II's fingerprint (IKD)
  shutil.copytree(ident, one)
  ds = dataset_lib.load(ident)
  n = ds.num_items
  codes = np.stack([np.arange(-1, n), np.zeros(n + 1, int)], 1)
  artifacts.save_npy(os.path.join(ident, "codes", "codes.npy"), codes)
  codes[1:, 0] = 0
  artifacts.save_npy(os.path.join(one, "codes", "codes.npy"), codes)
  stage2 = dict(valid={}, test={"recall@10": 0.25, "ndcg@10": 0.125})
  for wd in (ident, one):
    _finish(wd, "codes", codes_lib, config)
    _finish(wd, "train", generate, config)
    artifacts.save_json(os.path.join(wd, "eval", "results.json"), stage2)
    _finish(wd, "eval", evaluate, config)
  artifacts.mark_done(one, "eval", "from another run")  # as a --reuse'd eval stage would be
  out = tmp_path / "rec.json"

  def bench(runs):
    argv, sys.argv = sys.argv, ["bench_code_structure.py", f"--runs={runs}", f"--out={out}"]
    try:
      _bench().main()
    finally:
      sys.argv = argv
    return json.loads(out.read_text())

  rec = bench(f"ident:{ident},one:{one}")
  assert rec["kind"] == "code_structure" and rec["dataset"] == "synthetic"
  by = {r["label"]: r for r in rec["rows"]}
  assert by["ident"]["first_level_clusters"] == n and by["one"]["first_level_clusters"] == 1
  assert abs(by["one"]["test"]["level1_bits"]) < 1e-12 < by["ident"]["test"]["level1_bits"]
  # with one item per cluster a shuffle only renames items: no grouping, nothing above chance
  assert abs(by["ident"]["test"]["bits_above_chance"]) < 1e-9
  markov = metrics.from_topk(baselines.recommend(ds.sequences, n, 1, "markov", 20, fit_holdout=2),
                             [s[-1] for s in ds.sequences])
  ident_r10 = by["ident"]["test"]["code_markov"]["recall@10"]
  assert abs(ident_r10 - markov["recall@10"]) < 0.05 and markov["recall@10"] > 0.3
  assert by["one"]["test"]["code_markov"]["recall@10"] < ident_r10 / 2
  assert by["ident"]["stage2_test"] == stage2["test"]
  assert "stage2_test" not in by["one"]  # its eval stage is not of its codes
  artifacts.mark_done(one, "codes", "rebuilt under another config")
  with pytest.raises(ValueError, match="codes stage is not current"):
    bench(f"one:{one}")


def test_bench_script_rejects_bad_runs():
  bench = _bench()
  with pytest.raises(ValueError, match="label:workdir"):
    bench.parse_runs("prorec=/tmp/x")
  with pytest.raises(ValueError, match="empty"):
    bench.parse_runs(",")
