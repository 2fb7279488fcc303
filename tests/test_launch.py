"""Launcher dispatch, atomic/skip/resume behaviour and the absl entry point."""
import os
import subprocess
import sys

import pytest

from configs import prorec
from prorec_jax import artifacts
from prorec_jax import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**synthetic):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.data.synthetic.update(synthetic)
  return c


def _mtime(workdir):
  return os.stat(os.path.join(workdir, "data", "sequences.npz")).st_mtime_ns


def test_data_stage_writes_contract_artifacts(tmp_path):
  pipeline.run("data", _cfg(), str(tmp_path))
  st = artifacts.load_json(tmp_path / "data" / "stats.json")
  assert st["num_users"] == 300 and st["num_items"] == 150
  assert st["num_interactions"] > 0
  assert (tmp_path / "config.json").exists()
  assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".tmp")]


def test_rerun_skips_and_config_change_or_force_redoes(tmp_path):
  wd = str(tmp_path)
  pipeline.run("data", _cfg(), wd)
  first = _mtime(wd)
  pipeline.run("data", _cfg(), wd)
  assert _mtime(wd) == first  # same config: skipped
  pipeline.run("data", _cfg(), wd, force=True)
  second = _mtime(wd)
  assert second != first
  pipeline.run("data", _cfg(num_users=200), wd)
  assert _mtime(wd) != second
  assert artifacts.load_json(tmp_path / "data" / "stats.json")["num_users"] == 200


def test_killed_run_resumes(tmp_path):
  wd = str(tmp_path)
  pipeline.run("data", _cfg(), wd)
  os.remove(tmp_path / "data" / "stats.json")  # as if killed before finishing its outputs
  pipeline.run("data", _cfg(), wd)
  assert (tmp_path / "data" / "stats.json").exists()


def test_downstream_fingerprint_follows_upstream(tmp_path):
  wd = str(tmp_path)
  pipeline.run("data", _cfg(), wd)
  a = artifacts.fingerprint(_cfg(), ["embed"], wd, upstream=("data",))
  pipeline.run("data", _cfg(num_users=200), wd)
  assert artifacts.fingerprint(_cfg(), ["embed"], wd, upstream=("data",)) != a
  with pytest.raises(FileNotFoundError, match="--stage=codes"):
    artifacts.stage_fingerprint(wd, "codes")


def test_dispatch_covers_every_stage_and_refuses_unimplemented(tmp_path):
  assert pipeline.ORDER == ("data", "embed", "align", "codes", "train", "eval", "analyze")
  for stage in pipeline.ORDER:
    if not pipeline.implemented(stage):
      with pytest.raises(NotImplementedError, match="not implemented yet"):
        pipeline.run(stage, _cfg(), str(tmp_path))
  with pytest.raises(ValueError, match="unknown stage"):
    pipeline.run("fit", _cfg(), str(tmp_path))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  class Boom(Exception):
    pass
  def write(f):
    f.write(b"partial")
    raise Boom
  with pytest.raises(Boom):
    artifacts._atomic(str(tmp_path / "x.npy"), write, "wb")
  assert list(tmp_path.iterdir()) == []


def _launch(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "launch.py", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_launcher_data_stage_and_config_typo(tmp_path):
  cfg = "--config=configs/prorec.py:dataset=synthetic,runlocal=True"
  r = _launch(cfg, f"--workdir={tmp_path}", "--stage=data")
  assert r.returncode == 0, r.stderr
  assert (tmp_path / "data" / "stats.json").exists()
  r = _launch(cfg, "--config.data.nmae=x", f"--workdir={tmp_path}", "--stage=data")
  assert r.returncode != 0 and "nmae" in r.stderr
  r = _launch("--config=configs/prorec.py:dataset=amazon", f"--workdir={tmp_path}", "--stage=data")
  assert r.returncode != 0 and "unknown dataset" in r.stderr


def test_start_wipes_partial_work_of_another_config(tmp_path):
  wd = str(tmp_path)
  artifacts.start(wd, "align", "fp1")
  (tmp_path / "align" / "checkpoints").mkdir()
  artifacts.start(wd, "align", "fp1")  # same config: partial work is kept for resuming
  assert (tmp_path / "align" / "checkpoints").exists()
  artifacts.start(wd, "align", "fp2")  # another config: nothing stale may be resumed
  assert not (tmp_path / "align" / "checkpoints").exists()


def test_raising_only_training_limits_keeps_the_work_and_lowering_them_wipes_it(tmp_path):
  wd, ckpt = str(tmp_path), tmp_path / "train" / "checkpoints"
  artifacts.start(wd, "train", "fp32", extend=("k", {"max_epochs": 32, "patience": 3}))
  ckpt.mkdir()
  artifacts.mark_done(wd, "train", "fp32")
  (tmp_path / "train" / "params.msgpack").write_text("the 32-epoch result")
  artifacts.start(wd, "train", "fp64", extend=("k", {"max_epochs": 64, "patience": 3}),
                  outputs=("params.msgpack",))
  assert ckpt.exists()  # only a limit went up: the run continues from its checkpoints
  assert not (tmp_path / "train" / "done.json").exists()  # and is not skipped as finished
  assert not (tmp_path / "train" / "params.msgpack").exists()  # nor read as the 64-epoch result
  artifacts.start(wd, "train", "fp48", extend=("k", {"max_epochs": 48, "patience": 3}))
  assert not ckpt.exists()  # a limit went down: epochs past it are not the new config's run
  ckpt.mkdir()
  artifacts.start(wd, "train", "lr", extend=("other", {"max_epochs": 64, "patience": 3}))
  assert not ckpt.exists()  # anything else changed: nothing stale is resumed


def test_a_marker_without_extension_info_is_never_extended(tmp_path):
  (tmp_path / "train" / "checkpoints").mkdir(parents=True)
  (tmp_path / "train" / ".fingerprint").write_text("fp32")  # written before extensions existed
  artifacts.start(str(tmp_path), "train", "fp64", extend=("k", {"max_epochs": 64}))
  assert not (tmp_path / "train" / "checkpoints").exists()  # its limits are unknown: retrain
  for bare in ("fp32", "2562162983007211", "12e45"):  # the last two parse as JSON numbers
    (tmp_path / "train" / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "train" / ".fingerprint").write_text(bare)
    artifacts.start(str(tmp_path), "train", bare, extend=("k", {"max_epochs": 32}))
    assert (tmp_path / "train" / "checkpoints").exists()  # the same fingerprint still resumes


def test_fingerprint_ignore_drops_only_the_named_field(tmp_path):
  a, b = _cfg(), _cfg()
  with b.unlocked():
    b.generate.optim.max_epochs += 1
  assert artifacts.fingerprint(a, ["generate"]) != artifacts.fingerprint(b, ["generate"])
  ign = ["generate.optim.max_epochs"]
  assert artifacts.fingerprint(a, ["generate"], ignore=ign) == artifacts.fingerprint(
      b, ["generate"], ignore=ign)
  with pytest.raises(ValueError, match="in none of the sections"):
    artifacts.fingerprint(a, ["eval"], ignore=ign)


def test_force_redoes_from_scratch(tmp_path):
  wd = str(tmp_path)
  pipeline.run("data", _cfg(), wd)
  (tmp_path / "data" / "leftover").write_text("x")
  pipeline.run("data", _cfg(), wd, force=True)
  assert not (tmp_path / "data" / "leftover").exists()


def test_begin_skips_only_finished_outputs_of_the_same_config(tmp_path):
  wd = str(tmp_path)
  assert artifacts.begin(wd, "codes", "fp1", ("codes.npy",))
  (tmp_path / "codes" / "codes.npy").write_text("x")
  assert artifacts.begin(wd, "codes", "fp1", ("codes.npy",))  # not marked done: runs again
  artifacts.mark_done(wd, "codes", "fp1")
  assert not artifacts.begin(wd, "codes", "fp1", ("codes.npy",))  # done, same config: skipped
  assert artifacts.begin(wd, "codes", "fp2", ("codes.npy",))  # another config: redone, wiped
  assert not (tmp_path / "codes" / "codes.npy").exists()
  assert not (tmp_path / "codes" / "done.json").exists()
