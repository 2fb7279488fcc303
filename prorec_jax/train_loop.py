"""The shared training loop: train state, optimiser, scanned epochs, early stopping, resume.

An epoch runs as a few jitted ``lax.scan`` calls over stacked batches (``chunk_steps`` steps each),
so there is one host round trip per chunk, not per step; metrics are fetched per chunk. Each epoch
ends with a validation score; the best epoch and the latest one are checkpointed, and a restarted
run resumes from the latest. Shuffling depends on (seed, epoch) and keys on the step, so a resumed
run ends where an uninterrupted one does.
"""
import json
import os
import math
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from prorec_jax import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


SCHEDULES = ("constant", "cosine")


def make_schedule(optim, steps_per_epoch=None):
  """Learning rate by step: linear warmup to ``optim.lr`` over ``optim.warmup_steps``, then
  ``optim.schedule``: "constant", or "cosine" decay to ``optim.final_lr * optim.lr`` at the end of
  ``optim.max_epochs`` epochs of ``steps_per_epoch`` (early stopping may end training sooner)."""
  warmup = max(int(optim.warmup_steps), 1)
  if optim.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, optim.lr, warmup), optax.constant_schedule(optim.lr)],
        [warmup])
  if optim.schedule == "cosine":
    if not steps_per_epoch:
      raise ValueError("optim.schedule='cosine' needs the number of steps per epoch")
    total = max(int(optim.max_epochs) * int(steps_per_epoch), warmup + 1)
    return optax.warmup_cosine_decay_schedule(0.0, optim.lr, warmup, total,
                                              end_value=optim.final_lr * optim.lr)
  raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim.schedule!r}")


def limits(optim, prefix):
  """The fields of ``optim`` (config path ``prefix``) that only bound training, with their values:
  raising them continues a finished run rather than retraining it (``artifacts.start``).
  ``max_epochs`` is a limit only under the "constant" schedule (it shapes the cosine one) and when
  it is a multiple of ``eval_every``: otherwise ``fit`` validates at the last epoch out of turn,
  which a longer run would not do, and that validation may pick the best epoch."""
  out = {f"{prefix}.patience": int(optim.patience)}
  constant = optim.get("schedule", "constant") == "constant"  # configs from before the field
  if constant and optim.max_epochs % optim.get("eval_every", 1) == 0:
    out[f"{prefix}.max_epochs"] = int(optim.max_epochs)
  return out


def make_optimizer(optim, steps_per_epoch=None):
  """Adam, or AdamW when ``optim.weight_decay`` > 0, on ``make_schedule``."""
  schedule = make_schedule(optim, steps_per_epoch)
  if optim.weight_decay < 0:
    raise ValueError(f"optim.weight_decay must be >= 0, got {optim.weight_decay}")
  if optim.weight_decay:
    return optax.adamw(schedule, weight_decay=optim.weight_decay)
  return optax.adam(schedule)


def init_state(params, tx):
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def make_train_step(loss_fn, tx):
  """``loss_fn(params, batch, key, consts) -> (loss, metrics)`` into a pure train step."""
  def train_step(state, batch, key, consts):
    key = jax.random.fold_in(key, state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, key, consts)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), dict(metrics, loss=loss)
  return train_step


def compile_chunk(train_step, mesh):
  """A jitted scan of ``train_step`` over [S, B, ...] batches: batch axis on ``data``, state
  replicated and donated."""
  def chunk(state, batches, key, consts):
    return jax.lax.scan(lambda st, b: train_step(st, b, key, consts), state, batches)
  repl = sharding.replicated(mesh)
  return jax.jit(chunk, in_shardings=(repl, NamedSharding(mesh, P(None, "data")), repl, repl),
                 out_shardings=(repl, repl), donate_argnums=0)


def device_examples(examples, mesh):
  """The training set (history, target) placed once on the devices, replicated: a step then reads
  its rows by index (``indexed_step``) and an epoch moves only [steps, batch] int32 indices."""
  data = dict(history=np.asarray(examples.history, np.int32),
              target=np.asarray(examples.target, np.int32))
  return jax.device_put(data, sharding.replicated(mesh))


def indexed_step(train_step, key="examples", widths=None):
  """Wraps ``train_step`` so its batch is ``{"index": [B]}`` rows of ``consts[key]`` (-1 = a
  padding row: weight 0, history and target 0), gathered on device.

  With ``widths`` (static history widths, e.g. ``batching.bucket_widths``) the batch also holds
  ``"bucket": [B]`` (one value repeated, so it shards like the index) and the step keeps only the
  last ``widths[bucket]`` history columns: histories are left-padded and the model counts positions
  from the end and masks padding, so this drops only padding and the step compiles once per width.
  """
  def gathered(batch, consts, width=None):
    idx_B = batch["index"]
    valid_B = idx_B >= 0
    rows = jnp.maximum(idx_B, 0)
    data = consts[key]
    hist = data["history"][rows]
    if width is not None:
      hist = hist[:, hist.shape[1] - width:]
    return dict(history=jnp.where(valid_B[:, None], hist, 0),
                target=jnp.where(valid_B, data["target"][rows], 0),
                weight=valid_B.astype(jnp.float32))

  def step(state, batch, rng, consts):
    if widths is None:
      return train_step(state, gathered(batch, consts), rng, consts)
    branches = [lambda st, b, r, c, w=w: train_step(st, gathered(b, c, w), r, c) for w in widths]
    return jax.lax.switch(batch["bucket"][0], branches, state, batch, rng, consts)
  return step


def run_epoch(chunk_fn, state, epoch_arrays, key, consts, mesh, chunk_steps=50, name="train"):
  """Runs one epoch of stacked batches; raises FloatingPointError at the first non-finite loss.

  Chunk ``i``'s metrics are fetched after chunk ``i + 1`` is dispatched, so the host never stalls
  the device; a non-finite loss is therefore reported one chunk late (the step is still exact).
  """
  steps = len(next(iter(epoch_arrays.values())))
  batch_sharding = NamedSharding(mesh, P(None, "data"))
  sums, t0 = {}, time.time()
  step0 = int(state.step)
  pending = None

  def consume(lo, metrics):
    metrics = jax.device_get(metrics)
    bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
    if bad.size:
      raise FloatingPointError(
          f"{name}: non-finite loss at step {step0 + lo + int(bad[0])}; stopping. The last good "
          "checkpoint is kept; lower the learning rate or check the inputs, then rerun to resume.")
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    done = min(lo + chunk_steps, steps)
    logging.info("%s: step %d/%d loss %.4f (%.1f steps/s)", name, done, steps,
                 float(np.mean(metrics["loss"])), done / max(time.time() - t0, 1e-9))

  for lo in range(0, steps, chunk_steps):
    part = jax.device_put({k: v[lo:lo + chunk_steps] for k, v in epoch_arrays.items()},
                          batch_sharding)
    state, metrics = chunk_fn(state, part, key, consts)
    if pending is not None:
      consume(*pending)
    pending = (lo, metrics)
  if pending is not None:
    consume(*pending)
  return state, {k: v / steps for k, v in sums.items()}


def abstract_of(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def fit(state, ckpt, train_epoch, evaluate, score, max_epochs, patience, log_path, name="train",
        eval_every=1):
  """Early-stopped training with resume; returns (best state, loop record). The record adds
  ``resumed_after`` (the epoch a resumed run restarted from, else 0) and ``seconds_all_epochs``
  (from the log, so it counts the epochs of earlier processes too).

  ``train_epoch(state, epoch) -> (state, train_metrics)``, ``evaluate(state) -> metrics`` on
  validation, ``score(metrics) -> float`` (higher is better). Validation runs every ``eval_every``
  epochs and after the last one; ``patience`` counts validations without improvement.
  """
  if eval_every < 1:
    raise ValueError(f"{name}: eval_every must be >= 1, got {eval_every}")
  abstract = abstract_of(state)
  restored = ckpt.restore_latest(abstract)
  loop = dict(epoch=0, best_score=None, best_epoch=0, bad_epochs=0)
  resumed_after = 0
  if restored is not None:
    state, loop = restored
    resumed_after = loop["epoch"]
    logging.info("%s: resuming after epoch %d (best %s at epoch %d)", name, loop["epoch"],
                 loop["best_score"], loop["best_epoch"])
  _trim_log(log_path, loop["epoch"])
  while loop["epoch"] < max_epochs and loop["bad_epochs"] < patience:
    epoch, t0 = loop["epoch"] + 1, time.time()
    state, train_metrics = train_epoch(state, epoch)
    record = dict(epoch=epoch, train=train_metrics)
    if epoch % eval_every and epoch < max_epochs:
      loop = dict(loop, epoch=epoch)
      logging.info("%s: epoch %d  %s  (%.0fs)", name, epoch, _fmt(train_metrics),
                   time.time() - t0)
    else:
      val = evaluate(state)
      s = float(score(val))
      improved = loop["best_score"] is None or s > loop["best_score"]
      loop = dict(epoch=epoch, best_score=s if improved else loop["best_score"],
                  best_epoch=epoch if improved else loop["best_epoch"],
                  bad_epochs=0 if improved else loop["bad_epochs"] + 1)
      if improved:
        ckpt.save_best(epoch, state, loop)
      record.update(valid=val, score=s, best_epoch=loop["best_epoch"])
      logging.info("%s: epoch %d  %s  valid %s  score %.4f%s  (%.0fs)", name, epoch,
                   _fmt(train_metrics), _fmt(val), s, "  *best*" if improved else "",
                   time.time() - t0)
    record["seconds"] = time.time() - t0
    with open(log_path, "a") as f:  # before the latest checkpoint: a resume trims what it lacks
      f.write(json.dumps(record) + "\n")
    ckpt.save_latest(epoch, state, loop)
  if loop["bad_epochs"] >= patience:
    logging.info("%s: early stop after %d validations without improvement", name, patience)
  best = ckpt.restore_best(abstract)
  if best is None:
    raise RuntimeError(f"{name}: no epoch finished (max_epochs={max_epochs})")
  return best[0], dict(loop, resumed_after=resumed_after, seconds_all_epochs=_log_seconds(log_path))


def _log_seconds(log_path):
  """Seconds of every logged epoch (training and validation), across resumed processes; None
  without a log (a resume that had nothing left to train)."""
  if not os.path.exists(log_path):
    return None
  total = 0.0
  with open(log_path) as f:
    for line in f:
      try:
        total += json.loads(line)["seconds"]
      except (json.JSONDecodeError, KeyError):
        continue
  return round(total, 1)


def _trim_log(log_path, last_epoch):
  """Keeps the log lines of epochs 1..last_epoch, once each, so it matches the restored state."""
  if not os.path.exists(log_path):
    return
  kept = {}
  with open(log_path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut short by the kill
        continue
      if record["epoch"] <= last_epoch:
        kept[record["epoch"]] = record
  with open(log_path, "w") as f:
    f.writelines(json.dumps(kept[e]) + "\n" for e in sorted(kept))


def _fmt(metrics):
  return " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())
                  if isinstance(v, (int, float)) and math.isfinite(v))
