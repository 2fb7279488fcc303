"""The shared loop: device-resident batches equal host batches; validation cadence and patience."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import prorec
from prorec_jax import checkpoint
from prorec_jax import sharding
from prorec_jax import train_loop
from prorec_jax.data import batching
from prorec_jax.data import split as split_lib


def _loss(params, batch, key, consts):
  del key, consts
  # Depends on history, target and weight, so a wrong gather or padding rule changes the result.
  x = batch["history"].astype(jnp.float32).mean(-1) * params["a"] + batch["target"] * params["b"]
  per_row = (x - 1.0) ** 2
  return jnp.sum(per_row * batch["weight"]) / jnp.maximum(batch["weight"].sum(), 1.0), {}


def _examples(n=37, h=5):
  rng = np.random.default_rng(0)
  return split_lib.Examples(rng.integers(0, 9, (n, h)).astype(np.int32),
                            rng.integers(1, 9, n).astype(np.int32), np.arange(n, dtype=np.int32))


def test_device_resident_epoch_equals_host_batches():
  mesh = sharding.make_mesh()
  ex = _examples()  # 37 rows, batch 8: the last batch has 3 padding rows
  tx = optax.sgd(0.01)
  params = {"a": np.float32(0.3), "b": np.float32(-0.2)}  # host values: states are donated
  base = train_loop.make_train_step(_loss, tx)
  key = jax.random.key(0)
  repl = sharding.replicated(mesh)

  host_chunk = train_loop.compile_chunk(base, mesh)
  arrays = batching.epoch_arrays(ex, 8, seed=3, epoch=1)
  arrays.pop("user")
  s_host = jax.device_put(train_loop.init_state(params, tx), repl)
  s_host, m_host = train_loop.run_epoch(host_chunk, s_host, arrays, key, {}, mesh, chunk_steps=2)

  dev_chunk = train_loop.compile_chunk(train_loop.indexed_step(base), mesh)
  consts = {"examples": train_loop.device_examples(ex, mesh)}
  index = dict(index=batching.batch_indices(len(ex), 8, seed=3, epoch=1).astype(np.int32))
  s_dev = jax.device_put(train_loop.init_state(params, tx), repl)
  s_dev, m_dev = train_loop.run_epoch(dev_chunk, s_dev, index, key, consts, mesh, chunk_steps=2)

  assert int(s_dev.step) == int(s_host.step) == 5
  for name in params:
    np.testing.assert_allclose(s_dev.params[name], s_host.params[name], rtol=1e-6)
  np.testing.assert_allclose(m_dev["loss"], m_host["loss"], rtol=1e-6)


def _fit(tmp_path, scores, max_epochs, patience, eval_every):
  mesh = sharding.make_mesh()
  tx = optax.sgd(0.1)
  state = jax.device_put(train_loop.init_state({"w": jnp.zeros(())}, tx),
                         sharding.replicated(mesh))
  trained, evaluated = [], []

  def train_epoch(st, epoch):
    trained.append(epoch)
    return st.replace(step=st.step + 1), {"loss": 1.0}

  def evaluate(st):
    evaluated.append(int(st.step))
    return {"m": scores[len(evaluated) - 1]}
  ck = checkpoint.Checkpoints(str(tmp_path / "ck"))
  best, loop = train_loop.fit(state, ck, train_epoch, evaluate, lambda m: m["m"], max_epochs,
                              patience, str(tmp_path / "log.jsonl"), eval_every=eval_every)
  ck.close()
  return trained, evaluated, int(best.step), loop


def test_eval_every_validates_on_multiples_and_the_last_epoch(tmp_path):
  trained, evaluated, best_step, loop = _fit(tmp_path, [0.1, 0.3, 0.2], 5, 10, 2)
  assert trained == [1, 2, 3, 4, 5]
  assert evaluated == [2, 4, 5]
  assert best_step == 4 and loop["best_epoch"] == 4


def test_patience_counts_validations_not_epochs(tmp_path):
  trained, evaluated, best_step, loop = _fit(tmp_path, [0.5, 0.4, 0.3, 0.2], 20, 2, 3)
  assert evaluated == [3, 6, 9]  # best at 3, then two validations without improvement
  assert trained == list(range(1, 10)) and best_step == 3 and loop["bad_epochs"] == 2


def test_saving_an_existing_step_replaces_it(tmp_path):
  """Resume after a kill between save_best(e) and save_latest(e) saves best step e again."""
  ck = checkpoint.Checkpoints(str(tmp_path / "ck"))
  tx = optax.sgd(0.1)
  first = train_loop.init_state({"w": jnp.zeros(3)}, tx)
  second = train_loop.init_state({"w": jnp.ones(3)}, tx)
  ck.save_best(4, first, {"epoch": 4})
  ck.save_best(4, second, {"epoch": 4, "again": True})
  state, loop = ck.restore_best(train_loop.abstract_of(second))
  ck.close()
  np.testing.assert_array_equal(state.params["w"], np.ones(3))
  assert loop["again"]


def test_resumed_log_has_one_line_per_epoch(tmp_path):
  """A kill between an epoch's log line and its checkpoint reruns that epoch: the log stays 1..N."""
  log = tmp_path / "log.jsonl"

  class Killed(Exception):
    pass

  class KillAt3(checkpoint.Checkpoints):
    def save_latest(self, step, state, loop):
      if step == 3:
        raise Killed
      super().save_latest(step, state, loop)

  mesh = sharding.make_mesh()
  tx = optax.sgd(0.1)
  init = train_loop.init_state({"w": jnp.zeros(())}, tx)

  def train_epoch(st, epoch):
    return st.replace(step=st.step + 1), {"loss": float(epoch)}

  def run(ck):
    state = jax.device_put(init, sharding.replicated(mesh))
    try:
      return train_loop.fit(state, ck, train_epoch, lambda st: {"m": float(st.step)},
                            lambda m: m["m"], 4, 10, str(log))
    finally:
      ck.close()
  with pytest.raises(Killed):
    run(KillAt3(str(tmp_path / "ck")))
  assert [json.loads(l)["epoch"] for l in open(log)] == [1, 2, 3]  # 3 logged, not checkpointed
  with open(log, "a") as f:
    f.write('{"epoch": 4, "tra')  # and a line cut short
  best, loop = run(checkpoint.Checkpoints(str(tmp_path / "ck")))
  records = [json.loads(l) for l in open(log)]
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]
  assert [r["train"]["loss"] for r in records] == [1.0, 2.0, 3.0, 4.0]
  assert int(best.step) == 4 and loop["epoch"] == 4


def _optim(**kw):
  optim = prorec.get_config("dataset=beauty").generate.optim
  with optim.unlocked():
    optim.update(kw)
  return optim


def test_cosine_schedule_warms_up_then_decays_to_final_lr_at_max_epochs():
  optim = _optim(schedule="cosine", lr=1e-3, final_lr=0.1, warmup_steps=100, max_epochs=10)
  lr = train_loop.make_schedule(optim, steps_per_epoch=50)  # 500 steps in all
  np.testing.assert_allclose([lr(0), lr(50), lr(100)], [0.0, 5e-4, 1e-3], rtol=1e-6)
  np.testing.assert_allclose(lr(300), 1e-4 + 0.5 * (1e-3 - 1e-4), rtol=1e-5)  # half-way down
  np.testing.assert_allclose([lr(500), lr(900)], [1e-4, 1e-4], rtol=1e-5)
  constant = train_loop.make_schedule(_optim(warmup_steps=100), steps_per_epoch=50)
  np.testing.assert_allclose([constant(50), constant(100), constant(10_000)], [5e-4, 1e-3, 1e-3])


def test_bad_optimizer_settings_are_clear_errors():
  with pytest.raises(ValueError, match="steps per epoch"):
    train_loop.make_schedule(_optim(schedule="cosine"))
  with pytest.raises(ValueError, match="constant"):
    train_loop.make_schedule(_optim(schedule="linear"), 10)
  with pytest.raises(ValueError, match="weight_decay"):
    train_loop.make_optimizer(_optim(weight_decay=-1.0), 10)


def test_weight_decay_shrinks_parameters_without_gradient():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.zeros(3)}
  for wd, expected in ((0.0, 1.0), (0.5, 1.0 - 1e-3 * 0.5)):
    tx = train_loop.make_optimizer(_optim(warmup_steps=1, lr=1e-3, weight_decay=wd), 10)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)  # step 0: warmup lr is 0
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], expected, rtol=1e-6)
