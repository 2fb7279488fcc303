"""The ``align`` stage (Stage I): DIN trained with the MAL + CKA alignment, then the export of the
integrated item embeddings.

Fusions: ``prorec`` (DIN + MAL + CKA; integrated = aligned E_col by default), ``concat``
(PCA(semantic) to the DIN width, concatenated with a DIN trained without CKA), ``collab_only``
(plain DIN), ``semantic_only`` (the semantic embeddings, no training).
Outputs in ``workdir/align``: integrated.npy, collaborative.npy, semantic_mapped.npy (prorec,
concat), metrics.json (DIN as a recommender), train_log.jsonl, checkpoints/.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from sklearn.decomposition import PCA

from prorec_jax import align_model
from prorec_jax import artifacts
from prorec_jax import checkpoint
from prorec_jax import din_rank
from prorec_jax import sharding
from prorec_jax import train_loop
from prorec_jax.data import batching
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import split as split_lib

OUTPUTS = ("integrated.npy", "metrics.json")


def load_semantic(workdir, num_items):
  return artifacts.load_item_matrix(os.path.join(workdir, "embed", "semantic.npy"), num_items,
                                    "embed")


def build_model(config, num_items):
  m = config.align.model
  return align_model.AlignModel(
      num_items=num_items, width=m.width, attention_dim=m.attention_dim,
      attention_mlp=tuple(m.attention_mlp), attention_softmax=m.attention_softmax,
      max_history=config.data.max_history, mal=config.align.mal,
      align=align_model.uses_alignment(config.align.fusion))


def init_params(model, config, sem_dim):
  hist = jnp.zeros((2, config.data.max_history), jnp.int32)
  batch = dict(history=hist, target=jnp.ones((2,), jnp.int32), weight=jnp.ones((2,)))
  negs = jnp.ones((1,), jnp.int32)
  sem = jnp.zeros((model.num_items + 1, sem_dim))
  return model.init(jax.random.key(config.seed), batch, negs, sem, 1.0, method="losses")


def make_loss(model, config, num_items):
  a = config.align

  def loss_fn(params, batch, key, semantic):
    negs = jax.random.randint(key, (a.num_negatives,), 1, num_items + 1)
    l_next, l_cka = model.apply(params, batch, negs, semantic, a.tau, a.in_batch_group,
                                method="losses")
    return l_next + a.cka_weight * l_cka, dict(next_loss=l_next, cka_loss=l_cka)
  return loss_fn


def _eval_rows(examples, n, seed):
  if n <= 0 or n >= len(examples):
    return np.arange(len(examples))
  return np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))


def train(config, workdir, ds, semantic, mesh):
  """Trains the DIN (+ MAL); returns (model, best params, DIN metrics)."""
  a, out = config.align, artifacts.stage_dir(workdir, "align")
  sharding.check_batch_size(a.optim.batch_size, mesh)
  split = split_lib.leave_one_out(ds.sequences, config.data.max_history)
  if len(split.train) == 0:
    raise ValueError("no training examples: every user has fewer than 4 interactions")
  model = build_model(config, ds.num_items)
  tx = train_loop.make_optimizer(a.optim, -(-len(split.train) // a.optim.batch_size))
  state = jax.device_put(train_loop.init_state(init_params(model, config, semantic.shape[1]), tx),
                         sharding.replicated(mesh))
  chunk = train_loop.compile_chunk(
      train_loop.make_train_step(make_loss(model, config, ds.num_items), tx), mesh)
  sem_dev = jax.device_put(jnp.asarray(semantic), sharding.replicated(mesh))
  key = jax.random.key(config.seed)
  ranker = din_rank.make_ranker(model, ds.num_items, config.data.max_history,
                                a.model.attention_mlp[0], mesh, a.eval_batch_size)
  rows = _eval_rows(split.valid, a.eval_users, config.seed)
  final_rows = _eval_rows(split.valid, a.final_eval_users, config.seed + 1)

  def train_epoch(state, epoch):
    arrays = batching.epoch_arrays(split.train, a.optim.batch_size, config.seed, epoch)
    return train_loop.run_epoch(chunk, state, arrays, key, sem_dev, mesh, a.optim.chunk_steps,
                                name=f"align epoch {epoch}")

  def evaluate(state):
    return ranker(state.params, split.valid.history[rows], split.valid.target[rows])[1]

  ckpt = checkpoint.Checkpoints(os.path.join(out, "checkpoints"))
  best, loop = train_loop.fit(
      state, ckpt, train_epoch, evaluate, lambda m: m["recall@10"] + m["ndcg@10"],
      a.optim.max_epochs, a.optim.patience, os.path.join(out, "train_log.jsonl"), name="align")
  ckpt.close()
  result = dict(best_epoch=loop["best_epoch"], epochs=loop["epoch"], eval_users=len(final_rows),
                resumed_after_epoch=loop["resumed_after"],
                seconds_all_epochs=loop["seconds_all_epochs"])
  for name, ex in (("valid", split.valid), ("test", split.test)):  # test: once, best epoch only
    result[name] = ranker(best.params, ex.history[final_rows], ex.target[final_rows])[1]
    logging.info("align: DIN %s %s", name, result[name])
  return model, best.params, result


def pca(x, dim, seed):
  dim = min(dim, x.shape[1], x.shape[0] - 1)
  return PCA(dim, random_state=seed).fit_transform(x).astype(np.float32)


def _with_pad_row(x):
  return np.concatenate([np.zeros((1, x.shape[1]), np.float32), np.asarray(x, np.float32)])


def export(config, model, params, semantic):
  """The matrices written to workdir/align, each [num_items + 1, D] with row 0 zeros."""
  fusion, a = config.align.fusion, config.align
  table = np.asarray(model.apply(params, method="table"), np.float32)[1:]
  out = dict(collaborative=_with_pad_row(table))
  if fusion == "prorec":
    mapped = np.asarray(jax.jit(lambda p, s: model.apply(p, s, method="mapped"))(
        params, semantic[1:]), np.float32)
    out["semantic_mapped"] = _with_pad_row(mapped)
    choice = {"collaborative": table, "mapped": mapped, "mean": 0.5 * (table + mapped)}
    if a.export not in choice:
      raise ValueError(f"align.export must be one of {tuple(choice)}, got {a.export!r}")
    out["integrated"] = _with_pad_row(choice[a.export])
  elif fusion == "concat":
    reduced = pca(semantic[1:], table.shape[1], config.seed)
    out["semantic_mapped"] = _with_pad_row(reduced)
    out["integrated"] = _with_pad_row(np.concatenate([reduced, table], axis=1))
  else:
    out["integrated"] = out["collaborative"]
  return out


def fingerprint(config, workdir, ignore=()):
  upstream = ("data",) if config.align.fusion == "collab_only" else ("data", "embed")
  return artifacts.fingerprint(config, ["align", "seed", "data.max_history"], workdir, upstream,
                               ignore)


def extension(config, workdir):
  """(fingerprint without the training limits, the limits); see ``artifacts.start``."""
  lim = train_loop.limits(config.align.optim, "align.optim")
  return fingerprint(config, workdir, ignore=tuple(lim)), lim


def run(config, workdir):
  align_model.uses_alignment(config.align.fusion)  # validates the name
  out = artifacts.stage_dir(workdir, "align")
  fp = fingerprint(config, workdir)
  if not artifacts.begin(workdir, "align", fp, OUTPUTS, extend=extension(config, workdir)):
    return
  t0 = time.time()
  ds = dataset_lib.load(workdir)
  if ds.num_items == 0:
    raise ValueError("align: empty catalog")
  fusion = config.align.fusion
  semantic = (np.zeros((ds.num_items + 1, 1), np.float32) if fusion == "collab_only"
              else load_semantic(workdir, ds.num_items))
  if fusion == "semantic_only":
    mats, result = dict(integrated=semantic), dict(note="semantic_only: no DIN is trained")
  else:
    model, params, result = train(config, workdir, ds, semantic, sharding.make_mesh())
    mats = export(config, model, params, semantic)
  for name, mat in mats.items():
    artifacts.save_npy(os.path.join(out, f"{name}.npy"), mat)
  result.update(fusion=fusion, seconds=time.time() - t0, seed=config.seed,
                integrated_shape=list(mats["integrated"].shape))
  artifacts.save_json(os.path.join(out, "metrics.json"), result)
  artifacts.mark_done(workdir, "align", fp, seconds=result["seconds"])
  logging.info("align: %s integrated %s in %.0fs", fusion, mats["integrated"].shape,
               result["seconds"])
