"""The ``embed`` stage: item text -> frozen semantic embeddings ``workdir/embed/semantic.npy``.

Output: ``semantic.npy`` float32 [num_items + 1, D] (row 0 = padding, zeros; row i = item id i)
and ``meta.json`` (encoder, dim, pooling, a sha256 of the item texts, timings). The embeddings come
either from a pretrained text encoder run here (``prorec_jax.text_encoders``; the default is
sentence-transformers/all-MiniLM-L6-v2 with mean pooling and L2 normalisation) or from a
``.npy`` computed elsewhere (``embed.precomputed``, e.g. Llama2-7b embeddings made on a GPU box).

Speed: texts are tokenised in one call, sorted by length and cut into batches, each padded to one
of a few lengths (8, 12, .., 32, 40, .., 64, ...) with a fixed number of rows per length (fewer
for long texts on CPU, where ~2k-token batches stay in cache), so short titles do not pay for
``max_tokens`` positions and the encoder compiles once per length used, never per batch.
Tokenising and compiling run in a background thread while the weights load and while earlier
batches run.

The stage is skipped when its outputs match the config, the data stage and the item texts.
Nothing is written unless the whole table was computed and checked.
"""
import concurrent.futures
import hashlib
import json
import os
import time

from absl import logging
import numpy as np

from prorec_jax import artifacts
from prorec_jax.data import dataset as dataset_lib

STAGE = "embed"
SEMANTIC = "semantic.npy"
META = "meta.json"
OUTPUTS = (SEMANTIC, META)
# Padded tokens per batch on CPU: smaller batches keep the activations in cache. Measured on the
# 2-core CPU (BENCHMARKS.md): Beauty end to end in 47 s with 2048, 50 s with 1024, 52 s uncapped.
CPU_BATCH_TOKENS = 2048


def item_texts(ds, fields):
  """The text of items 1..N; empty or whitespace-only text is an error naming the item."""
  texts = [ds.item_text(i, tuple(fields)) for i in range(1, ds.num_items + 1)]
  for i, text in enumerate(texts, start=1):
    if not text.strip():
      raise ValueError(
          f"item {i} (source id {ds.items[i - 1].source_id!r}) has empty text for embed.fields="
          f"{tuple(fields)}; fix the item metadata or use data.empty_text='placeholder'")
  return texts


def texts_sha256(texts):
  return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def file_sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def bucket_lengths(max_tokens):
  """The padded lengths a batch may have: 8, 12, .., 32, 40, .., 64, 80, .., 128, 160, ..

  About four steps per doubling (at most ~25% padding), capped at and ending with max_tokens.
  """
  out, n = [], 8
  while n < max_tokens:
    out.append(n)
    n += max(4, 2 ** (n.bit_length() - 3))
  return tuple(out) + (int(max_tokens),)


def rows_for(length, rows, max_batch_tokens=0, multiple=1):
  """Rows of a batch padded to ``length``: ``rows``, capped at max_batch_tokens // length."""
  if max_batch_tokens:
    rows = min(rows, max(multiple, max_batch_tokens // length // multiple * multiple))
  return rows


def plan_batches(lengths, rows, max_tokens, max_batch_tokens=0, multiple=1):
  """Splits texts into batches: a list of (padded length, batch rows, text indices).

  Texts are sorted by token count (stable, so the plan is deterministic) and cut into consecutive
  batches; each batch is padded to the shortest bucket length that holds its longest text and has
  ``rows_for(length)`` rows, so there is one shape, and one compile, per length. Similar lengths
  share a batch, so little compute is padding; filler rows appear only where the rows shrink.
  """
  lengths = np.asarray(lengths)
  buckets = np.asarray(bucket_lengths(max_tokens))

  def bucket(n):
    return int(buckets[np.searchsorted(buckets, n)])

  def nrows(length):
    return rows_for(length, rows, max_batch_tokens, multiple)

  order = np.argsort(lengths, kind="stable")
  plan, start = [], 0
  while start < len(order):
    take = nrows(bucket(lengths[order[start]]))
    # If the longest text of the batch needs a longer bucket, take only as many as that one holds.
    take = min(take, nrows(bucket(lengths[order[min(start + take, len(order)) - 1]])))
    idx = order[start:start + take]
    length = bucket(lengths[idx[-1]])
    plan.append((length, nrows(length), idx))
    start += take
  return plan


def pad_batch(token_ids, idx, length, rows, pad_id):
  """Right-padded [rows, length] ids and mask; rows past len(idx) are empty filler."""
  ids_BxL = np.full((rows, length), pad_id, np.int32)
  mask_BxL = np.zeros((rows, length), np.int32)
  for r, i in enumerate(idx):
    ids = token_ids[i]
    ids_BxL[r, :len(ids)] = ids
    mask_BxL[r, :len(ids)] = 1
  return ids_BxL, mask_BxL


class _Progress:
  """A progress bar in the log: one line per tenth of the batches."""

  def __init__(self, total, what):
    self.total, self.what, self.done, self.shown = total, what, 0, 0
    self.t0 = time.time()

  def update(self, n=1):
    self.done += n
    tenth = self.done * 10 // self.total
    if tenth > self.shown or self.done == self.total:
      self.shown = tenth
      secs = time.time() - self.t0
      eta = secs / self.done * (self.total - self.done)
      logging.info("embed: [%-10s] %d/%d %s, %.1fs, eta %.1fs", "#" * tenth, self.done,
                   self.total, self.what, secs, eta)


def embed_texts(encoder, texts, max_tokens, batch_size, pooling="mean", normalize=True,
                max_batch_tokens=None):
  """Embeds ``texts`` with a TextEncoder: float32 [len(texts), D] and run notes.

  Batches hold ``batch_size`` texts, fewer when they are long: at most ``max_batch_tokens``
  padded tokens (None: CPU_BATCH_TOKENS on CPU, no cap elsewhere; 0: no cap).

  One background thread tokenises, plans the batches and compiles each padded shape in the order
  they are needed, while this thread reads the weights (when ``encoder.params`` is None) and then
  runs the batches: compiling overlaps with loading and with encoding. Row ``i`` is the same
  whatever else is in its batch (padding is masked). Batches are sharded along the mesh axis
  ``data``; their rows are rounded up to a multiple of its size.
  """
  from prorec_jax import sharding  # pylint: disable=g-import-not-at-top
  from prorec_jax import text_encoders  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  devices = sharding.data_size(mesh)
  rows = -(-batch_size // devices) * devices
  if max_batch_tokens is None:
    max_batch_tokens = CPU_BATCH_TOKENS if jax.default_backend() == "cpu" else 0
  worker = concurrent.futures.ThreadPoolExecutor(1)

  def prepare():
    token_ids = text_encoders.tokenize(encoder.tokenizer, texts, max_tokens)
    plan = plan_batches([len(t) for t in token_ids], rows, max_tokens, max_batch_tokens, devices)
    shapes = {(n, r): worker.submit(text_encoders.compile_shape, encoder, pooling, normalize, r,
                                    n, mesh) for n, r in sorted({(n, r) for n, r, _ in plan})}
    return token_ids, plan, shapes

  try:
    prepared = worker.submit(prepare)
    t0 = time.time()
    if encoder.params is None:
      text_encoders.load_weights(encoder)
    weights_s = time.time() - t0
    token_ids, plan, shapes = prepared.result()
    out = _run_batches(encoder, token_ids, plan, mesh, shapes)
  finally:
    worker.shutdown(cancel_futures=True)
  lengths = np.array([len(t) for t in token_ids])
  info = dict(num_batches=len(plan), padded_lengths=[n for n, _ in sorted(shapes)],
              batch_rows=[r for _, r in sorted(shapes)], max_batch_tokens=max_batch_tokens,
              tokens=int(lengths.sum()), padded_tokens=sum(r * n for n, r, _ in plan),
              texts_at_max_tokens=int((lengths >= max_tokens).sum()),
              weights_seconds=round(weights_s, 3))
  return out, info


def _run_batches(encoder, token_ids, plan, mesh, shapes):
  """Runs the planned batches, one in flight while the next is padded on the host."""
  import jax  # pylint: disable=g-import-not-at-top
  from prorec_jax import sharding  # pylint: disable=g-import-not-at-top
  params = jax.device_put(encoder.params, sharding.replicated(mesh))
  out = np.zeros((len(token_ids), encoder.dim), np.float32)
  progress = _Progress(len(plan), "batches")
  pending = None
  for length, rows, idx in plan:
    batch = sharding.shard_batch(pad_batch(token_ids, idx, length, rows, encoder.pad_id), mesh)
    emb = shapes[length, rows].result()(params, *batch)  # asynchronous: collect the previous now
    if pending is not None:
      out[pending[0]] = np.asarray(pending[1])[:len(pending[0])]
      progress.update()
    pending = (idx, emb)
  if pending is not None:
    out[pending[0]] = np.asarray(pending[1])[:len(pending[0])]
    progress.update()
  return out


def _encode_items(e, texts):
  """Runs the configured encoder over ``texts``: [N + 1, D] table (row 0 zeros) and notes."""
  from prorec_jax import text_encoders  # pylint: disable=g-import-not-at-top
  if e.pooling not in text_encoders.POOLINGS:
    raise ValueError(f"embed.pooling must be one of {text_encoders.POOLINGS}, got {e.pooling!r}")
  if int(e.max_tokens) < 2 or int(e.batch_size) < 1:
    raise ValueError(f"embed.max_tokens must be >= 2 and embed.batch_size >= 1, got "
                     f"{e.max_tokens} and {e.batch_size}")
  t0 = time.time()
  encoder = text_encoders.load(e.encoder, e.family, max_tokens=int(e.max_tokens), weights=False)
  logging.info("embed: %s (%s, dim %d) from %s", e.encoder, encoder.model_type, encoder.dim,
               encoder.path)
  emb, info = embed_texts(encoder, texts, int(e.max_tokens), int(e.batch_size), e.pooling,
                          e.normalize, None if e.max_batch_tokens < 0 else e.max_batch_tokens)
  if info["texts_at_max_tokens"]:
    logging.warning("embed: %d item texts reach embed.max_tokens=%d and may be truncated",
                    info["texts_at_max_tokens"], e.max_tokens)
  table = np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])
  info.update(source="encoder", encoder_path=encoder.path, model_type=encoder.model_type,
              encode_seconds=round(time.time() - t0, 3))
  return table, info


def load_precomputed(path, num_items, normalize):
  """Reads and checks a precomputed [N + 1, D] (row 0 zeros) or [N, D] table: [N + 1, D] f32."""
  name = f"embed.precomputed={path!r}"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{name}: no such file")
  try:
    arr = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as err:
    raise ValueError(f"{name}: not a readable .npy array ({err})") from None
  if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or
                           np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"{name}: expected a 2-d float array [items, dim], got {arr.dtype} "
                     f"{arr.shape}")
  if arr.shape[0] == num_items:
    offset = 1  # rows are items 1..N: prepend the padding row
  elif arr.shape[0] == num_items + 1:
    offset = 0
  else:
    raise ValueError(
        f"{name}: has {arr.shape[0]} rows, but the dataset has {num_items} items; expected "
        f"{num_items + 1} rows (row 0 = padding, zeros) or {num_items} (items 1..{num_items})")
  with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: checked next
    arr = arr.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(arr).all(axis=1)) + offset
  if bad.size:
    raise ValueError(f"{name}: {bad.size} rows hold NaN or inf, e.g. item ids "
                     f"{bad[:5].tolist()} (row 0 = padding)")
  if offset == 0 and np.any(arr[0] != 0):
    raise ValueError(f"{name}: has {num_items + 1} rows, so row 0 is the padding row and must be "
                     f"all zeros; save items 1..{num_items} only, or zero row 0")
  table = np.concatenate([np.zeros((1, arr.shape[1]), np.float32), arr]) if offset else arr
  if normalize:
    norms = np.linalg.norm(table[1:], axis=1)
    zero = np.flatnonzero(norms == 0) + 1
    if zero.size:
      raise ValueError(f"{name}: item ids {zero[:5].tolist()} have all-zero embeddings; they "
                       "cannot be L2-normalised (set embed.normalize=False to keep them)")
    table[1:] /= norms[:, None]
  return table


def _fingerprint(config, workdir, text_sha, precomputed_sha):
  base = artifacts.fingerprint(config, ["embed"], workdir, upstream=("data",))
  return hashlib.sha256(f"{base}:{text_sha}:{precomputed_sha}".encode()).hexdigest()[:16]


def _cached(workdir, fp, text_sha):
  if not artifacts.is_done(workdir, STAGE, fp, OUTPUTS):
    return False
  meta = artifacts.load_json(os.path.join(artifacts.stage_dir(workdir, STAGE), META))
  return meta.get("text_sha256") == text_sha


def _check_table(table, num_items):
  """Last guard before writing: the contract of semantic.npy."""
  assert table.dtype == np.float32 and table.ndim == 2, (table.dtype, table.shape)
  assert table.shape[0] == num_items + 1, (table.shape, num_items)
  assert not table[0].any(), "row 0 (padding) must be zeros"
  if not np.isfinite(table).all():
    raise FloatingPointError("embed: the encoder produced NaN or inf embeddings")


def run(config, workdir):
  e = config.embed
  out_dir = artifacts.stage_dir(workdir, STAGE)
  ds = dataset_lib.load(workdir)
  texts = item_texts(ds, e.fields)
  text_sha = texts_sha256(texts)
  precomputed = os.path.expanduser(e.precomputed) if e.precomputed else ""
  if precomputed and not os.path.isfile(precomputed):
    raise FileNotFoundError(f"embed.precomputed={e.precomputed!r}: no such file")
  pre_sha = file_sha256(precomputed) if precomputed else ""
  fp = _fingerprint(config, workdir, text_sha, pre_sha)
  if _cached(workdir, fp, text_sha):
    logging.info("embed: outputs in %s match the config and item texts; skipping", out_dir)
    return
  t0 = time.time()
  logging.info("embed: %d item texts (fields %s) -> %s", len(texts), tuple(e.fields),
               precomputed or e.encoder)
  if precomputed:
    table = load_precomputed(precomputed, ds.num_items, e.normalize)
    info = dict(source="precomputed", precomputed=os.path.abspath(precomputed),
                precomputed_sha256=pre_sha)
  else:
    table, info = _encode_items(e, texts)
  _check_table(table, ds.num_items)
  seconds = time.time() - t0
  meta = dict(
      info, encoder=e.encoder, family=e.family, pooling=e.pooling, max_tokens=int(e.max_tokens),
      batch_size=int(e.batch_size), normalize=bool(e.normalize), fields=list(e.fields),
      dim=int(table.shape[1]), num_items=ds.num_items, text_sha256=text_sha,
      seconds=round(seconds, 3))
  if precomputed:  # the encoder settings did not make this table; do not suggest they did
    meta.update(encoder="precomputed:" + os.path.basename(precomputed), family=None,
                pooling=None, max_tokens=None, batch_size=None)
  artifacts.clear_done(workdir, STAGE)
  artifacts.save_npy(os.path.join(out_dir, SEMANTIC), table)
  artifacts.save_json(os.path.join(out_dir, META), meta)
  artifacts.mark_done(workdir, STAGE, fp, seconds=seconds, text_sha256=text_sha)
  logging.info("embed: wrote %s [%d, %d] in %.1fs (%.0f items/s)", SEMANTIC, *table.shape,
               seconds, ds.num_items / max(seconds, 1e-9))
