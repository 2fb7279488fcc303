"""Stage II training: sharded step == single-device step, end-to-end train + eval, exact resume."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import prorec
from conftest import load_script
from prorec_jax import artifacts
from prorec_jax import codes as codes_lib
from prorec_jax import evaluate
from prorec_jax import generate
from prorec_jax import pipeline
from prorec_jax import seq2seq
from prorec_jax import sharding
from prorec_jax import train_loop
from prorec_jax.data import batching
from prorec_jax.data import dataset as dataset_lib
from prorec_jax.data import stage as data_stage

K, D = 16, 8


def _config(**generate_fields):
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  with c.unlocked():
    c.generate.optim.update(max_epochs=2)
    c.generate.update(generate_fields)
  return c


def _workdir(tmp_path, config):
  """Synthetic data plus fabricated upstream outputs: random unique 2-level codes, random
  integrated embeddings."""
  wd = str(tmp_path)
  data_stage.run(config, wd)
  n = dataset_lib.load(wd).num_items
  rng = np.random.default_rng(0)
  flat = rng.choice(K * K, n, replace=False)
  codes = np.stack([flat // K, flat % K], 1).astype(np.int32)
  artifacts.save_npy(os.path.join(wd, "codes", "codes.npy"),
                     np.concatenate([np.full((1, 2), -1, np.int32), codes]))
  artifacts.save_npz(os.path.join(wd, "codes", "prefix_tables.npz"),
                     **codes_lib.build_tables(codes, K))
  artifacts.mark_done(wd, "codes", "fabricated")
  artifacts.save_npy(os.path.join(wd, "align", "integrated.npy"),
                     rng.normal(size=(n + 1, D)).astype(np.float32))
  artifacts.mark_done(wd, "align", "fabricated")
  return wd


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return _workdir(tmp_path_factory.mktemp("gen"), _config())


def test_sharded_step_equals_single_device(workdir):
  config = _config()
  with config.unlocked():
    config.generate.model.dropout = 0.0  # halves the compile time; the stage test runs dropout
  ds, split, _, model, consts = generate.setup(config, workdir)
  loss_fn = generate.make_loss(model, config, ds.num_items)
  tx = train_loop.make_optimizer(config.generate.optim)
  params = jax.device_get(seq2seq.init_params(model, 0, consts["tokens"]))  # host copy: donated
  arrays = batching.epoch_arrays(split.train, 64, 0, 1)
  arrays.pop("user")
  batches = [{k: v[i] for k, v in arrays.items()} for i in range(3)]
  key = jax.random.key(0)
  out = {}
  for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices()[:4])):
    mesh = sharding.make_mesh(devices=devices)
    repl = sharding.replicated(mesh)
    cst = jax.device_put({k: jnp.asarray(v) for k, v in consts.items()}, repl)
    def step(p, opt, b, i):  # the train step's maths, also returning the gradients
      g = jax.grad(lambda p: loss_fn(p, b, jax.random.fold_in(key, i), cst)[0])(p)
      updates, opt = tx.update(g, opt, p)
      return g, optax.apply_updates(p, updates), opt
    jstep = jax.jit(step, in_shardings=(repl, repl, sharding.data_sharding(mesh), repl),
                    out_shardings=repl)
    p = jax.device_put(params, repl)
    opt, grads = jax.device_put(tx.init(params), repl), []
    for i, b in enumerate(batches):
      g, p, opt = jstep(p, opt, sharding.shard_batch(b, mesh), jnp.int32(i))
      grads.append(g)
    out[name] = jax.device_get((grads[0], p))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               out["one"][0], out["four"][0])
  lr = config.generate.optim.lr
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=lr), out["one"][1],
               out["four"][1])


def test_history_buckets_drop_only_padding(workdir):
  """A step on a batch cut to a narrower history width equals the step on the full width."""
  config = _config()
  with config.unlocked():
    config.generate.model.dropout = 0.0
  ds, split, _, model, consts = generate.setup(config, workdir)
  h = config.data.max_history
  lengths = np.sum(split.train.history > 0, axis=1)
  rows = np.flatnonzero(lengths <= 3)[:64]
  assert len(rows) == 64 and lengths[rows].max() == 3 and h > 3
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  # SGD, not Adam: attention key biases have a true gradient of 0, and Adam would scale their
  # float noise up to the learning rate.
  tx = optax.sgd(0.1)
  base = train_loop.make_train_step(generate.make_loss(model, config, ds.num_items), tx)
  cst = jax.device_put({k: jnp.asarray(v) for k, v in consts.items()}, repl)
  cst["examples"] = train_loop.device_examples(split.train, mesh)
  params = jax.device_get(seq2seq.init_params(model, 0, consts["tokens"]))
  batch = dict(index=np.stack([rows, rows[::-1]]).astype(np.int32))
  out = {}
  # "short" cuts to 2 items, dropping real ones: it must differ, which also shows that the
  # bucket picks the branch ("widest" is the same widths with bucket 1).
  for name, widths, bucket in (("full", None, None), ("cut", (3, h), 0), ("short", (2, h), 0),
                               ("widest", (2, h), 1)):
    b = dict(batch) if bucket is None else dict(batch, bucket=np.full((2, 64), bucket, np.int32))
    chunk = train_loop.compile_chunk(train_loop.indexed_step(base, widths=widths), mesh)
    state = jax.device_put(train_loop.init_state(params, tx), repl)
    state, metrics = train_loop.run_epoch(chunk, state, b, jax.random.key(0), cst, mesh)
    out[name] = jax.device_get(state.params), metrics["loss"]
  assert abs(out["short"][1] - out["full"][1]) > 1e-3
  for name in ("cut", "widest"):
    np.testing.assert_allclose(out[name][1], out["full"][1], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 out[name][0], out["full"][0])


def test_uniform_batches_keep_the_fingerprint_of_configs_without_the_bucket_field(workdir):
  config = _config()
  old = config.copy_and_resolve_references()
  with old.unlocked():
    del old.generate.optim["history_buckets"]  # a config.json written before the field existed
  assert generate.fingerprint(config, workdir) == generate.fingerprint(old, workdir)
  with config.unlocked():
    config.generate.optim.history_buckets = (4,)
  assert generate.fingerprint(config, workdir) != generate.fingerprint(old, workdir)


def test_only_max_epochs_and_patience_are_limits_and_only_under_a_constant_schedule(workdir):
  base = _config()
  key, lim = generate.extension(base, workdir)
  assert set(lim) == {"generate.optim.max_epochs", "generate.optim.patience"}
  longer = _config()
  with longer.unlocked():
    longer.generate.optim.update(max_epochs=9, patience=7)
  assert generate.extension(longer, workdir)[0] == key
  assert generate.fingerprint(longer, workdir) != generate.fingerprint(base, workdir)
  other = _config()
  with other.unlocked():
    other.generate.optim.lr *= 2
  assert generate.extension(other, workdir)[0] != key
  for c in (base, longer):  # under cosine, max_epochs sets the decay: it changes the run
    with c.unlocked():
      c.generate.optim.update(schedule="cosine", patience=1)
  assert generate.extension(longer, workdir)[0] != generate.extension(base, workdir)[0]
  assert set(generate.extension(base, workdir)[1]) == {"generate.optim.patience"}
  odd = _config()
  with odd.unlocked():  # epoch 3 validated out of turn: a longer run would not have done that
    odd.generate.optim.update(max_epochs=3, eval_every=2)
  assert set(generate.extension(odd, workdir)[1]) == {"generate.optim.patience"}


def test_a_stage_from_before_extensions_can_be_adopted_when_its_config_matches(tmp_path):
  short, longer = _config(), _config()
  with longer.unlocked():
    longer.generate.optim.max_epochs = 4
  wd = _workdir(tmp_path, short)
  artifacts.save_json(os.path.join(wd, "config.json"), short.to_dict())
  fp = generate.fingerprint(short, wd)
  artifacts.mark_done(wd, "train", fp)
  with open(os.path.join(wd, "train", ".fingerprint"), "w") as f:
    f.write(fp)  # the bare marker of a stage that ran before extensions existed
  os.makedirs(os.path.join(wd, "train", "checkpoints"))
  artifacts.save_json(os.path.join(wd, "config.json"), longer.to_dict())
  with pytest.raises(ValueError, match="changed its config"):  # not the finished run's config
    pipeline.adopt_for_extension(wd, "train")
  with pytest.raises(ValueError, match="only the training stages"):
    pipeline.adopt_for_extension(wd, "eval")
  artifacts.save_json(os.path.join(wd, "config.json"), short.to_dict())
  assert pipeline.adopt_for_extension(wd, "train")["generate.optim.max_epochs"] == 2
  artifacts.start(wd, "train", generate.fingerprint(longer, wd), generate.extension(longer, wd))
  assert os.path.isdir(os.path.join(wd, "train", "checkpoints"))  # extended, not retrained


def test_adopt_script_brings_an_old_config_up_to_the_current_fields():
  adopt = load_script("benchmarks/adopt_for_extension.py")
  saved = _config().to_dict()
  del saved["generate"]["optim"]["schedule"]  # a run from before the field existed
  saved["generate"]["optim"]["lr"] = 0.5
  up = adopt.upgraded(ml_collections.ConfigDict(saved))
  assert up.generate.optim.schedule == "constant" and up.generate.optim.lr == 0.5
  assert up.generate.optim.max_epochs == 2  # the saved value, not the dataset default
  saved["generate"]["optim"]["momentum"] = 0.9
  with pytest.raises(ValueError, match="does not know"):
    adopt.upgraded(ml_collections.ConfigDict(saved))


@pytest.mark.slow
def test_train_and_eval_stages(workdir):
  config = _config()
  generate.run(config, workdir)
  evaluate.run(config, workdir)
  res = artifacts.load_json(os.path.join(workdir, "eval", "results.json"))
  n_users = artifacts.load_json(os.path.join(workdir, "data", "stats.json"))["num_users"]
  for split in ("valid", "test"):
    assert set(res[split]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
    topk = np.load(os.path.join(workdir, "eval", f"topk_{split}.npy"))
    assert topk.shape == (n_users, 20) and topk.dtype == np.int32
    assert topk.min() >= 1 and all(len(set(r)) == 20 for r in topk)
  assert res["invalid_rate"] == 0.0 and res["duplicate_rate"] == 0.0
  assert res["seed"] == 0 and "commit" in res and res["config"]["generate"]["ikd"]
  assert res["beam_vs_exhaustive"]["users"] == 16
  log = [json.loads(line) for line in open(os.path.join(workdir, "train", "train_log.jsonl"))]
  assert len(log) == 2 and log[1]["train"]["loss"] < log[0]["train"]["loss"]


def test_trained_model_reloads_only_under_its_own_config(tmp_path):
  """A model trained with an override reloads exactly through the run's config.json; under a
  config that builds another model (no item-id table, other width) loading fails loudly instead
  of silently dropping or misreading parameters."""
  config = _config(history_item_ids=True)
  wd = _workdir(tmp_path, config)
  pipeline.run("data", config, wd)  # records config.json, as every launch does
  _, _, _, model, consts = generate.setup(config, wd)
  params = jax.device_get(seq2seq.init_params(model, 1, consts["tokens"]))
  generate.save_params(os.path.join(wd, "train", generate.PARAMS), params)
  loaded = pipeline.load_config(wd)
  assert loaded.generate.history_item_ids and loaded.data.name == "synthetic"
  *_, model2, _, restored = generate.load_trained(loaded, wd)
  assert model2.num_item_ids == model.num_item_ids > 0
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  wider = _config()
  with wider.unlocked():
    wider.generate.model.width *= 2
  for other, leaf in ((_config(), "item_embed"), (wider, "embed")):
    with pytest.raises(ValueError, match=leaf):
      generate.load_trained(other, wd)


def test_load_config_needs_a_run_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a run directory"):
    pipeline.load_config(str(tmp_path))


def test_missing_codes_is_a_clear_error(tmp_path):
  config = _config()
  data_stage.run(config, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="--stage=codes"):
    generate.run(config, str(tmp_path))


def test_resume_is_exact(tmp_path):  # also: raising max_epochs extends a finished run
  # Bucketed batches (history_buckets), so their (seed, epoch) order is checked too; uniform
  # batches use the same loop (test_train_loop, test_launch).
  config = _config(ikd=False)
  with config.unlocked():
    config.generate.optim.history_buckets = (2, 5)
  straight = _workdir(tmp_path / "a", config)
  generate.run(config, straight)
  resumed = _workdir(tmp_path / "b", config)
  cut = _config(ikd=False)
  with cut.unlocked():
    cut.generate.optim.update(max_epochs=1, history_buckets=(2, 5))
  generate.run(cut, resumed)  # a finished 1-epoch run (the same state as one killed there) ...
  generate.run(config, resumed)  # ... raising max_epochs continues it from its checkpoints
  a, b = (artifacts.load_json(os.path.join(w, "train", "metrics.json"))
          for w in (straight, resumed))
  assert a["best_valid_ndcg10"] == b["best_valid_ndcg10"] and a["epochs"] == b["epochs"] == 2
  assert a["resumed_after_epoch"] == 0 and b["resumed_after_epoch"] == 1
  la, lb = ([json.loads(x) for x in open(os.path.join(w, "train", "train_log.jsonl"))]
            for w in (straight, resumed))
  assert la[-1]["train"] == lb[-1]["train"] and la[-1]["valid"] == lb[-1]["valid"]


def test_a_rebuilt_upstream_stage_makes_the_downstream_outputs_stale(tmp_path):
  config = _config()
  wd = _workdir(tmp_path, config)
  artifacts.save_json(os.path.join(wd, "config.json"), config.to_dict())
  assert not pipeline.is_current(wd, "train")  # never finished
  with pytest.raises(ValueError, match="checks one of"):
    pipeline.is_current(wd, "embed")
  for stage, module in (("codes", codes_lib), ("train", generate), ("eval", evaluate)):
    os.makedirs(os.path.join(wd, stage), exist_ok=True)
    for name in module.OUTPUTS:
      path = os.path.join(wd, stage, name)
      if not os.path.exists(path):
        open(path, "w").close()
    artifacts.mark_done(wd, stage, module.fingerprint(config, wd))
  assert all(pipeline.is_current(wd, s) for s in ("codes", "train", "eval"))
  os.remove(os.path.join(wd, "eval", "results.json"))
  assert not pipeline.is_current(wd, "eval")  # an output is missing
  open(os.path.join(wd, "eval", "results.json"), "w").close()
  artifacts.mark_done(wd, "codes", "rebuilt with other settings")  # e.g. a --reuse'd run
  assert not pipeline.is_current(wd, "codes")
  assert not pipeline.is_current(wd, "train") and not pipeline.is_current(wd, "eval")
