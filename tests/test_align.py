"""Stage I: sharded step, checkpoints, NaN handling, every fusion variant, resume, learning."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import prorec
from conftest import load_script
from prorec_jax import align
from prorec_jax import artifacts
from prorec_jax import checkpoint
from prorec_jax import metrics
from prorec_jax import sharding
from prorec_jax import train_loop
from prorec_jax.data import batching
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import split as split_lib
from prorec_jax.data import stage as data_stage

SEM_DIM = 24


def _config(**align_fields):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.align.optim.update(max_epochs=2, batch_size=64, chunk_steps=20)
    c.align.update(align_fields)
    c.align.eval_users = 96
  return c


def _workdir(path, config):
  data_stage.run(config, str(path))
  ds = dataset_lib.load(str(path))
  sem = np.random.default_rng(0).normal(size=(ds.num_items + 1, SEM_DIM)).astype(np.float32)
  sem[0] = 0
  os.makedirs(path / "embed", exist_ok=True)
  np.save(path / "embed" / "semantic.npy", sem)
  artifacts.mark_done(str(path), "embed", "test-semantic")
  return ds, sem


def _state_and_chunk(config, ds, sem, mesh):
  model = align.build_model(config, ds.num_items)
  tx = train_loop.make_optimizer(config.align.optim)
  state = train_loop.init_state(align.init_params(model, config, SEM_DIM), tx)
  step = train_loop.make_train_step(align.make_loss(model, config, ds.num_items), tx)
  return jax.device_put(state, sharding.replicated(mesh)), train_loop.compile_chunk(step, mesh)


def test_sharded_step_equals_single_device(tmp_path):
  config = _config()
  ds, sem = _workdir(tmp_path, config)
  ex = split_lib.leave_one_out(ds.sequences, config.data.max_history).train
  arrays = {k: v[:3] for k, v in batching.epoch_arrays(ex, 64, seed=0, epoch=1).items()}
  out = []
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh = sharding.make_mesh(devices=devices)
    state, chunk = _state_and_chunk(config, ds, sem, mesh)
    state, m = train_loop.run_epoch(chunk, state, arrays, jax.random.key(0),
                                    jax.device_put(jnp.asarray(sem)), mesh, chunk_steps=3)
    out.append((jax.device_get(state.params), m))
  assert sharding.make_mesh().shape["data"] == 8
  np.testing.assert_allclose(out[0][1]["loss"], out[1][1]["loss"], rtol=1e-5)
  # Adam divides by sqrt(v): parameters whose gradients are ~0 move by noise of the reduction
  # order, so parameters are compared at the scale of one update (lr <= 3e-4 in warmup)...
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=3e-5), out[0][0], out[1][0])
  # ...and the gradients themselves tightly.
  model = align.build_model(config, ds.num_items)
  params = align.init_params(model, config, SEM_DIM)
  loss = align.make_loss(model, config, ds.num_items)
  batch = {k: v[0] for k, v in arrays.items()}
  grad = jax.jit(jax.grad(lambda p, b: loss(p, b, jax.random.key(3), jnp.asarray(sem))[0]))
  mesh = sharding.make_mesh()
  g8 = grad(jax.device_put(params, sharding.replicated(mesh)), sharding.shard_batch(batch, mesh))
  g1 = grad(params, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g8, g1)


def test_checkpoint_round_trip_is_exact(tmp_path):
  config = _config()
  ds, sem = _workdir(tmp_path, config)
  state, _ = _state_and_chunk(config, ds, sem, sharding.make_mesh())
  ck = checkpoint.Checkpoints(str(tmp_path / "ck"))
  ck.save_latest(3, state, dict(epoch=3, best_score=0.5))
  restored, loop = ck.restore_latest(train_loop.abstract_of(state))
  assert loop == dict(epoch=3, best_score=0.5)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state, restored)
  assert ck.restore_best(train_loop.abstract_of(state)) is None


def test_nan_loss_names_the_step_and_keeps_last_good_checkpoint(tmp_path):
  mesh = sharding.make_mesh()
  tx = train_loop.make_optimizer(_config().align.optim)

  def loss_fn(params, batch, key, consts):
    loss = jnp.sum((params["w"] - batch["x"].mean()) ** 2)
    return jnp.where(consts["nan_from"] <= consts["step"][0], jnp.nan, loss), {}

  def step(state, batch, key, consts):
    return train_loop.make_train_step(loss_fn, tx)(
        state, batch, key, dict(consts, step=jnp.full((1,), state.step)))
  chunk = train_loop.compile_chunk(step, mesh)
  state = jax.device_put(train_loop.init_state({"w": jnp.zeros(3)}, tx), sharding.replicated(mesh))
  arrays = {"x": np.ones((5, 8, 2), np.float32)}
  ck = checkpoint.Checkpoints(str(tmp_path / "ck"))
  consts = {"nan_from": jnp.int32(7)}

  def epoch_fn(state, epoch):
    return train_loop.run_epoch(chunk, state, arrays, jax.random.key(0), consts, mesh, 2)
  with pytest.raises(FloatingPointError, match="non-finite loss at step 7"):
    train_loop.fit(state, ck, epoch_fn, lambda s: {"m": 1.0}, lambda m: m["m"], 5, 5,
                   str(tmp_path / "log.jsonl"))
  _, loop = ck.restore_latest(train_loop.abstract_of(state))
  assert loop["epoch"] == 1  # epoch 1 (steps 0-4) was good and is kept


@pytest.fixture(scope="module")
def prorec_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("prorec")
  config = _config()
  ds, sem = _workdir(path, config)
  align.run(config, str(path))
  return path, config, ds, sem


def test_prorec_outputs_and_metrics(prorec_run):
  path, config, ds, _ = prorec_run
  w = config.align.model.width
  for name in ("integrated", "collaborative", "semantic_mapped"):
    mat = np.load(path / "align" / f"{name}.npy")
    assert mat.shape == (ds.num_items + 1, w) and mat.dtype == np.float32
    assert (mat[0] == 0).all() and np.isfinite(mat).all()
  np.testing.assert_array_equal(np.load(path / "align" / "integrated.npy"),
                                np.load(path / "align" / "collaborative.npy"))
  m = artifacts.load_json(path / "align" / "metrics.json")
  for split in ("valid", "test"):
    assert {"recall@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"} <= set(m[split])


def test_training_lowers_losses_and_aligns_modalities(prorec_run):
  path, config, ds, sem = prorec_run
  log = [json.loads(l) for l in open(path / "align" / "train_log.jsonl")]
  # A longer run than the fixture's: keep training the same workdir for 4 more epochs.
  with config.unlocked():
    config.align.optim.max_epochs = 6
    config.align.optim.patience = 10
  align.run(config, str(path))
  log = [json.loads(l) for l in open(path / "align" / "train_log.jsonl")]
  assert log[-1]["train"]["next_loss"] < log[0]["train"]["next_loss"]
  assert log[-1]["train"]["cka_loss"] < 0.5 * log[0]["train"]["cka_loss"]
  col = np.load(path / "align" / "collaborative.npy")[1:]
  mapped = np.load(path / "align" / "semantic_mapped.npy")[1:]
  col /= np.linalg.norm(col, axis=1, keepdims=True)
  mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
  cos = col @ mapped.T
  matching = np.diag(cos).mean()
  off = (cos.sum() - np.trace(cos)) / (cos.size - len(cos))
  assert matching > off + 0.3


@pytest.mark.parametrize("fusion,width_of", [
    ("concat", lambda w, s: min(w, s) + w), ("collab_only", lambda w, s: w),
    ("semantic_only", lambda w, s: s)])
def test_fusion_variants(tmp_path, fusion, width_of):
  config = _config(fusion=fusion)
  with config.unlocked():
    config.align.optim.max_epochs = 1
  ds, sem = _workdir(tmp_path, config)
  align.run(config, str(tmp_path))
  integrated = np.load(tmp_path / "align" / "integrated.npy")
  assert integrated.shape == (ds.num_items + 1, width_of(config.align.model.width, SEM_DIM))
  assert (integrated[0] == 0).all()
  if fusion == "semantic_only":
    np.testing.assert_array_equal(integrated, sem)
  if fusion == "concat":
    assert (tmp_path / "align" / "semantic_mapped.npy").exists()


def test_resume_after_kill_matches_uninterrupted(tmp_path, monkeypatch):
  config = _config()
  a, b = tmp_path / "a", tmp_path / "b"
  _workdir(a, config)
  _workdir(b, config)
  align.run(config, str(a))
  real_fit = train_loop.fit

  def killed_fit(state, ckpt, train_epoch, *args, **kw):
    def dying(state, epoch):
      if epoch == 2:
        raise KeyboardInterrupt("killed")
      return train_epoch(state, epoch)
    return real_fit(state, ckpt, dying, *args, **kw)
  monkeypatch.setattr(train_loop, "fit", killed_fit)
  with pytest.raises(KeyboardInterrupt):
    align.run(config, str(b))
  monkeypatch.setattr(train_loop, "fit", real_fit)
  align.run(config, str(b))  # resumes from the epoch-1 checkpoint
  np.testing.assert_array_equal(np.load(a / "align" / "integrated.npy"),
                                np.load(b / "align" / "integrated.npy"))


def test_raising_max_epochs_extends_a_finished_run(tmp_path):
  config, short = _config(), _config()
  with short.unlocked():
    short.align.optim.max_epochs = 1
  a, b = tmp_path / "a", tmp_path / "b"
  _workdir(a, config)
  _workdir(b, config)
  align.run(config, str(a))
  align.run(short, str(b))
  align.run(config, str(b))  # continues the finished 1-epoch run instead of retraining it
  log = [json.loads(l) for l in open(b / "align" / "train_log.jsonl")]
  assert [r["epoch"] for r in log] == [1, 2]
  assert artifacts.load_json(b / "align" / "metrics.json")["resumed_after_epoch"] == 1
  assert artifacts.load_json(a / "align" / "metrics.json")["resumed_after_epoch"] == 0
  np.testing.assert_array_equal(np.load(a / "align" / "integrated.npy"),
                                np.load(b / "align" / "integrated.npy"))


def test_bad_semantic_inputs(tmp_path):
  config = _config()
  ds, sem = _workdir(tmp_path, config)
  np.save(tmp_path / "embed" / "semantic.npy", sem[:-1])
  with pytest.raises(ValueError, match="expected"):
    align.run(config, str(tmp_path))
  sem[5, 2] = np.nan
  np.save(tmp_path / "embed" / "semantic.npy", sem)
  with pytest.raises(ValueError, match="non-finite.*item 5"):
    align.run(config, str(tmp_path))
  assert not (tmp_path / "align" / "integrated.npy").exists()
  with config.unlocked():
    config.align.fusion = "fused"
  with pytest.raises(ValueError, match="align.fusion"):
    align.run(config, str(tmp_path))


def _bench_gap():
  return load_script("benchmarks/bench_gap_breakdown.py")


def test_gap_breakdown_restores_the_best_din_exactly(prorec_run):
  """bench_gap_breakdown.py --din ranks with the DIN restored from the best align checkpoint:
  on the users the align stage scored, its lists give the align stage's own test metrics."""
  path, config, ds, _ = prorec_run
  bench = _bench_gap()
  topk = bench.din_topk(config, str(path), ds)
  test = split_lib.leave_one_out(ds.sequences, config.data.max_history).test
  rows = align._eval_rows(test, config.align.final_eval_users, config.seed + 1)
  want = artifacts.load_json(path / "align" / "metrics.json")["test"]
  got = metrics.from_topk(topk[rows], test.target[rows])
  assert got == pytest.approx(want, abs=1e-6)


def test_gap_breakdown_refuses_a_din_from_another_stage_one(prorec_run, tmp_path):
  path, config, ds, _ = prorec_run
  bench = _bench_gap()
  other = tmp_path / "other"
  os.makedirs(other / "align")
  for name in ("collaborative.npy", "integrated.npy"):
    np.save(other / "align" / name, np.load(path / "align" / name) + 1.0)
  with pytest.raises(ValueError, match="another Stage I"):
    bench.din_topk(config, str(path), ds, din_workdir=str(other))
  with pytest.raises(FileNotFoundError, match="pass --din_workdir"):  # align outputs, no checkpoints
    bench.din_topk(config, str(other), ds)
  assert not os.path.exists(other / "align" / "checkpoints")
