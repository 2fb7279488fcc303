"""Analyze stage: the dominance measure on constructions with known answers, and the outputs."""
import os

import numpy as np
import pytest

from configs import prorec
from prorec_jax import analysis
from prorec_jax import artifacts
from prorec_jax.data import stage as data_stage


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sources(n=400, seed=0, dims=(32, 48)):
  rng = np.random.default_rng(seed)
  return _unit(rng.normal(size=(n, dims[0]))), _unit(rng.normal(size=(n, dims[1])))


@pytest.mark.parametrize("perplexity", [30.0, None])
def test_fused_equal_to_a_source_gets_all_of_it(perplexity):
  sem, col = _sources()
  dom = analysis.dominance(sem.copy(), dict(semantic=sem, collaborative=col), perplexity)
  assert dom["semantic"]["share"] == pytest.approx(1.0)
  assert dom["semantic"]["share_fixed_temperature"] == pytest.approx(1.0)
  assert dom["collaborative"]["share"] == pytest.approx(0.0)
  assert dom["semantic"]["kl"] == pytest.approx(0.0, abs=1e-5)
  assert dom["semantic"]["knn_overlap@10"] == pytest.approx(1.0)
  assert dom["semantic"]["cka"] == pytest.approx(1.0)


@pytest.mark.parametrize("perplexity", [30.0, None])
def test_equal_mix_of_independent_sources_is_about_half_each(perplexity):
  sem, col = _sources(dims=(32, 32))  # same width: cosines of equal spread
  fused = np.concatenate([sem, col], axis=1)  # cos(fused) = (cos(sem) + cos(col)) / 2
  dom = analysis.dominance(fused, dict(semantic=sem, collaborative=col), perplexity)
  assert dom["semantic"]["share"] == pytest.approx(0.5, abs=0.05)
  assert dom["semantic"]["share"] + dom["collaborative"]["share"] == pytest.approx(1.0)


def test_calibrated_neighbourhoods_have_the_asked_perplexity():
  u = analysis._unit(np.random.default_rng(7).normal(size=(300, 16)))
  rows = np.arange(300)
  self_mask = rows[:, None] == rows[None, :]
  cos = np.where(self_mask, -np.inf, np.asarray(u @ u.T))
  scale = analysis._calibrated_scale(cos, self_mask, np.log(30.0))
  _, entropy = analysis._log_softmax_rows(cos, self_mask, scale)
  np.testing.assert_allclose(np.exp(entropy), 30.0, rtol=1e-3)


def test_mostly_semantic_mix_leans_semantic_and_chunking_is_exact():
  sem, col = _sources(n=300, seed=1)
  fused = np.concatenate([2 * sem, col], axis=1)
  srcs = dict(semantic=sem, collaborative=col)
  a = analysis.dominance(fused, srcs, chunk=512)
  b = analysis.dominance(fused, srcs, chunk=7)  # many chunks, the last one padded
  assert a["semantic"]["share"] > 0.7
  assert a["semantic"]["knn_overlap@10"] > a["collaborative"]["knn_overlap@10"]
  for s in srcs:
    for m in a[s]:
      assert a[s][m] == pytest.approx(b[s][m], rel=1e-4, abs=1e-6)


def test_linear_cka_is_invariant_to_rotation_and_scale():
  x = np.random.default_rng(2).normal(size=(200, 10))
  q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(10, 10)))
  assert analysis.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
  assert analysis.linear_cka(x, np.random.default_rng(4).normal(size=(200, 5))) < 0.2


def _config(**analyze):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.analyze.update(analyze, tsne_items=120, clusters=4)
  return c


def _fake_stage(wd, stage, **mats):
  for name, x in mats.items():
    x = np.concatenate([np.zeros((1, x.shape[1]), np.float32), x.astype(np.float32)])
    artifacts.save_npy(os.path.join(wd, stage, f"{name}.npy"), x)
  artifacts.mark_done(wd, stage, f"fake-{stage}")


def test_stage_writes_dominance_tsne_and_figure(tmp_path, capsys):
  wd, ref = str(tmp_path / "run"), str(tmp_path / "collab_only")
  data_stage.run(_config(), wd)
  n = artifacts.load_json(os.path.join(wd, "data", "stats.json"))["num_items"]
  sem, col = _sources(n)
  _fake_stage(wd, "embed", semantic=sem)
  _fake_stage(wd, "align", integrated=col, collaborative=col)
  analysis.run(_config(), wd)
  out = os.path.join(wd, "analyze")
  dom = artifacts.load_json(os.path.join(out, analysis.DOMINANCE))
  assert dom["collab_independent"] is False  # fell back to align/collaborative.npy
  assert dom["sources"]["collaborative"]["share"] == pytest.approx(1.0)
  assert "| prorec | semantic |" in capsys.readouterr().out
  with np.load(os.path.join(out, analysis.TSNE)) as z:
    assert z["xy_fused"].shape == (120, 2) and z["clusters"].shape == (120,)
    assert set(z.files) >= {"xy_semantic", "xy_collaborative", "items"}
  assert os.path.getsize(os.path.join(out, analysis.FIGURE)) > 1000

  _fake_stage(ref, "align", integrated=sem)  # an independent collaborative reference
  analysis.run(_config(collab_workdir=ref), wd)
  dom = artifacts.load_json(os.path.join(out, analysis.DOMINANCE))
  assert dom["collab_independent"] is True and dom["collab_reference"].startswith(ref)
  assert dom["sources"]["collaborative"]["share"] == pytest.approx(0.5)  # both sources tie
  assert "prorec (run)" in analysis.dominance_table([wd])


def test_stage_rejects_nan_and_mismatched_rows(tmp_path):
  wd = str(tmp_path)
  data_stage.run(_config(), wd)
  n = artifacts.load_json(os.path.join(wd, "data", "stats.json"))["num_items"]
  sem, col = _sources(n)
  col = col.copy()
  col[3, 0] = np.nan
  _fake_stage(wd, "embed", semantic=sem[:-1])
  _fake_stage(wd, "align", integrated=col, collaborative=col)
  with pytest.raises(ValueError, match="NaN or inf"):
    analysis.run(_config(), wd)
  _fake_stage(wd, "align", integrated=np.nan_to_num(col), collaborative=np.nan_to_num(col))
  with pytest.raises(ValueError, match="expected"):
    analysis.run(_config(), wd)
