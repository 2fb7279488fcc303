"""The ``train`` stage (Stage II): the seq2seq generator trained on codes with the IKD loss.

Loss = L_gen + mu * L_ikd. L_gen (eq. 6) is the cross-entropy of the target item's code, summed
over its L levels. L_ikd (eq. 7) is InfoNCE between the projected IKD output and the target's
Stage I integrated embedding (cosine / tau), negatives sampled uniformly from the catalog per step
(shared by the batch; a sample equal to a row's target is masked out for that row, so the target is
never its own negative). ``generate.ikd = False`` drops the token, the head and the term.

Early stopping reads validation NDCG@10 of the real constrained beam search on a fixed sample of
``generate.eval_users`` users. Outputs in ``workdir/train``: params.msgpack (best epoch),
metrics.json, train_log.jsonl, checkpoints/ (orbax, for resume).
"""
import os
import time

import flax
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from prorec_jax import artifacts
from prorec_jax import checkpoint
from prorec_jax import decode
from prorec_jax import metrics as metrics_lib
from prorec_jax import seq2seq
from prorec_jax import sharding
from prorec_jax import train_loop
from prorec_jax.data import batching
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import split as split_lib

STAGE = "train"
PARAMS = "params.msgpack"
OUTPUTS = (PARAMS, "metrics.json")


def ikd_loss(q_BxD, target_B, table_NxD, negs_M, tau, weight_B):
  """Eq. 7: InfoNCE of q against the target row of ``table``, negatives ``negs`` (never target)."""
  def unit(x):
    return x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)
  q = unit(q_BxD.astype(jnp.float32))
  pos_B = jnp.sum(q * unit(table_NxD[target_B]), -1) / tau
  neg_BxM = q @ unit(table_NxD[negs_M]).T / tau
  neg_BxM = jnp.where(negs_M[None, :] == target_B[:, None], -jnp.inf, neg_BxM)
  logits = jnp.concatenate([pos_B[:, None], neg_BxM], axis=1)
  nll_B = jax.nn.logsumexp(logits, axis=1) - pos_B
  return jnp.sum(nll_B * weight_B) / jnp.maximum(jnp.sum(weight_B), 1.0)


def make_loss(model, config, num_items):
  """``loss_fn(params, batch, key, consts)``; consts = dict(tokens [N+1, L], integrated)."""
  g = config.generate

  def loss_fn(params, batch, key, consts):
    drop_key, neg_key = jax.random.split(key)
    # Dropout bits from an RBG key: threefry dropout masks cost ~4x the compile time on CPU.
    drop_key = jax.random.wrap_key_data(jax.random.bits(drop_key, (4,), jnp.uint32), impl="rbg")
    tokens = consts["tokens"]
    tgt_tok_BxL = tokens[batch["target"]]
    logits_BxLxK, q = model.apply(params, batch["history"], tgt_tok_BxL, tokens, train=True,
                                  rngs={"dropout": drop_key})
    labels = tgt_tok_BxL - seq2seq.NUM_SPECIAL - jnp.arange(model.num_levels) * model.k
    ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxLxK.astype(jnp.float32), jnp.clip(labels, 0, model.k - 1))
    w = batch["weight"]
    denom = jnp.maximum(jnp.sum(w), 1.0)
    l_gen = jnp.sum(ce_BxL.sum(-1) * w) / denom
    out = dict(gen_loss=l_gen)
    loss = l_gen
    if model.ikd_dim:
      negs = jax.random.randint(neg_key, (g.ikd_negatives,), 1, num_items + 1)
      l_ikd = ikd_loss(q, batch["target"], consts["integrated"], negs, g.ikd_tau, w)
      out["ikd_loss"] = l_ikd
      loss = loss + g.ikd_weight * l_ikd
    return loss, out
  return loss_fn


def load_integrated(workdir, num_items):
  """Stage I's integrated embeddings, the IKD targets (set generate.ikd=False to go without)."""
  return artifacts.load_item_matrix(os.path.join(workdir, "align", "integrated.npy"), num_items,
                                    "align")


def eval_rows(n, count, seed):
  if count <= 0 or count >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def setup(config, workdir):
  """Everything both stages need: dataset, split, code tables, model, constants."""
  ds = dataset_lib.load(workdir)
  codes, tables, k = decode.load_code_tables(workdir, ds.num_items)
  split = split_lib.leave_one_out(ds.sequences, config.data.max_history)
  integrated = load_integrated(workdir, ds.num_items) if config.generate.ikd else None
  model = seq2seq.build(config, codes.shape[1], k, 0 if integrated is None else integrated.shape[1],
                        ds.num_items)
  consts = dict(tokens=seq2seq.token_table(codes, k))
  if integrated is not None:
    consts["integrated"] = integrated
  return ds, split, tables, model, consts


def evaluator(model, config, tables, tokens, num_items, mesh):
  """``fn(params, examples) -> (metrics, top-k items)`` with the constrained beam search."""
  topk = max(config.eval.topk)
  decode.check_beam(config.eval.beam, topk, num_items)
  search = decode.make_recommender(model, config.eval.beam, topk, mesh)
  bs = config.eval.batch_size
  sharding.check_batch_size(bs, mesh)

  def fn(params, ex):
    items, _ = decode.recommend(search, params, ex.history, tokens, tables["child"], bs, num_items)
    return metrics_lib.from_topk(items, ex.target, tuple(config.eval.topk)), items
  return fn


def history_widths(config):
  # .get: configs saved before the option existed (a run's config.json) mean uniform batches
  buckets = config.generate.optim.get("history_buckets", ())
  return batching.bucket_widths(buckets, config.data.max_history)


def make_epoch_batches(config, train_examples):
  """``fn(epoch) -> {"index": [S, B]}`` (plus ``"bucket": [S, B]`` under history_buckets): the
  epoch's batches as rows of the training set, shuffled by (seed, epoch)."""
  widths, bs = history_widths(config), config.generate.optim.batch_size
  lengths = np.sum(train_examples.history > 0, axis=1)

  def epoch_batches(epoch):
    if len(widths) == 1:
      return dict(index=batching.batch_indices(len(lengths), bs, config.seed,
                                               epoch).astype(np.int32))
    index, bucket = batching.bucketed_batch_indices(lengths, widths, bs, config.seed, epoch)
    return dict(index=index.astype(np.int32), bucket=np.repeat(bucket[:, None], bs, axis=1))
  return epoch_batches


def train_chunk(config, model, num_items, tx, mesh):
  """The jitted scan of train steps over ``make_epoch_batches`` batches (consts["examples"])."""
  widths = history_widths(config)
  step = train_loop.make_train_step(make_loss(model, config, num_items), tx)
  return train_loop.compile_chunk(
      train_loop.indexed_step(step, widths=None if len(widths) == 1 else widths), mesh)


def train(config, workdir, mesh):
  g, out = config.generate, artifacts.stage_dir(workdir, STAGE)
  sharding.check_batch_size(g.optim.batch_size, mesh)
  ds, split, tables, model, consts = setup(config, workdir)
  if len(split.train) == 0:
    raise ValueError("no training examples: every user has fewer than 4 interactions")
  repl = sharding.replicated(mesh)
  consts_dev = jax.device_put({k: jnp.asarray(v) for k, v in consts.items()}, repl)
  consts_dev["examples"] = train_loop.device_examples(split.train, mesh)  # moved once, not per epoch
  epoch_batches = make_epoch_batches(config, split.train)
  tx = train_loop.make_optimizer(g.optim, len(epoch_batches(0)["index"]))
  params = seq2seq.init_params(model, config.seed, consts["tokens"])
  num_params = sum(x.size for x in jax.tree.leaves(params))
  state = jax.device_put(train_loop.init_state(params, tx), repl)
  chunk = train_chunk(config, model, ds.num_items, tx, mesh)
  widths = history_widths(config)
  key = jax.random.key(config.seed)
  evaluate_fn = evaluator(model, config, tables, consts["tokens"], ds.num_items, mesh)
  rows = eval_rows(len(split.valid), g.eval_users, config.seed)
  valid_sample = split_lib.Examples(split.valid.history[rows], split.valid.target[rows],
                                    split.valid.user[rows])
  logging.info("train: %d examples, %d items, code length %d, k=%d, %s params, history widths %s",
               len(split.train), ds.num_items, model.num_levels, model.k, num_params, widths)

  def train_epoch(state, epoch):
    return train_loop.run_epoch(chunk, state, epoch_batches(epoch), key, consts_dev, mesh,
                                g.optim.chunk_steps,
                                name=f"train epoch {epoch}")

  def evaluate(state):
    return evaluate_fn(state.params, valid_sample)[0]

  ckpt = checkpoint.Checkpoints(os.path.join(out, "checkpoints"))
  best, loop = train_loop.fit(state, ckpt, train_epoch, evaluate, lambda m: m["ndcg@10"],
                              g.optim.max_epochs, g.optim.patience,
                              os.path.join(out, "train_log.jsonl"), name="train",
                              eval_every=g.optim.eval_every)
  ckpt.close()
  return jax.device_get(best.params), dict(best_epoch=loop["best_epoch"], epochs=loop["epoch"],
                                           best_valid_ndcg10=loop["best_score"],
                                           eval_users=len(rows),
                                           resumed_after_epoch=loop["resumed_after"],
                                           seconds_all_epochs=loop["seconds_all_epochs"])


def fingerprint(config, workdir, ignore=()):
  upstream = ("data", "codes", "align") if config.generate.ikd else ("data", "codes")
  if "history_buckets" in config.generate.optim and not config.generate.optim.history_buckets:
    # Uniform batches hash as they did before the option existed, so runs started then resume.
    config = config.copy_and_resolve_references()
    with config.unlocked():
      del config.generate.optim["history_buckets"]
  sections = ["generate", "seed", "data.max_history", "eval.beam", "eval.topk"]  # early stopping
  return artifacts.fingerprint(config, sections, workdir, upstream, ignore)


def extension(config, workdir):
  """(fingerprint without the training limits, the limits): a finished run continues when only
  max_epochs or patience went up (``artifacts.start``)."""
  lim = train_loop.limits(config.generate.optim, "generate.optim")
  return fingerprint(config, workdir, ignore=tuple(lim)), lim


def save_params(path, params):
  blob = flax.serialization.to_bytes(params)
  artifacts._atomic(path, lambda f: f.write(blob), "wb")  # pylint: disable=protected-access


def load_params(path, template):
  """Parameters saved by ``save_params``; they must match ``template`` leaf for leaf in name and
  shape (flax alone would drop extra leaves silently, e.g. a model trained with
  history_item_ids loaded under a config without it)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage=train first")
  with open(path, "rb") as f:
    state = flax.serialization.msgpack_restore(f.read())
  want = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(template), sep="/")
  got = flax.traverse_util.flatten_dict(state, sep="/")
  bad = sorted(set(want) ^ set(got)) + sorted(
      k for k in set(want) & set(got) if np.shape(want[k]) != np.shape(got[k]))
  if bad:
    raise ValueError(f"{path} does not match the configured model (differing leaves: "
                     f"{', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}); load it with the "
                     f"config it was trained with (prorec_jax.pipeline.load_config(workdir))")
  return flax.serialization.from_state_dict(template, state)


def load_trained(config, workdir):
  """``setup`` plus the best-epoch parameters of the finished train stage (host arrays)."""
  ds, split, tables, model, consts = setup(config, workdir)
  template = seq2seq.init_params(model, config.seed, consts["tokens"])
  params = load_params(os.path.join(artifacts.stage_dir(workdir, STAGE), PARAMS), template)
  return ds, split, tables, model, consts, params


def run(config, workdir):
  out = artifacts.stage_dir(workdir, STAGE)
  fp = fingerprint(config, workdir)
  if not artifacts.begin(workdir, STAGE, fp, OUTPUTS, extend=extension(config, workdir)):
    return
  t0 = time.time()
  params, result = train(config, workdir, sharding.make_mesh())
  save_params(os.path.join(out, PARAMS), params)
  result.update(seconds=time.time() - t0, seed=config.seed, ikd=bool(config.generate.ikd),
                history_tokens=config.generate.history_tokens,
                history_item_ids=bool(config.generate.history_item_ids))
  artifacts.save_json(os.path.join(out, "metrics.json"), result)
  artifacts.mark_done(workdir, STAGE, fp, seconds=result["seconds"])
  logging.info("train: best epoch %d of %d, valid ndcg@10 %.4f, %.0fs", result["best_epoch"],
               result["epochs"], result["best_valid_ndcg10"], result["seconds"])
