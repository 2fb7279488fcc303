"""The ``codes`` stage: item embeddings -> unique unicodes and the prefix tables of their trie.

Quantisers (``codes.method``): ``hkm`` hierarchical k-means (the paper; below), ``random``,
``rqvae`` and ``rkmeans`` (``prorec_jax.quantizers``). Input (``codes.input``): ``integrated``,
``collaborative`` or ``semantic_mapped`` (``align/<name>.npy``) or ``semantic``
(``embed/semantic.npy``).

Outputs in ``workdir/codes``:
  codes.npy          int32 [num_items + 1, L]; row i = code of item i, tokens in 0..k-1;
                     row 0 (padding) = -1 everywhere, so it can never match an item's code.
  prefix_tables.npz  the trie of the codes as dense arrays (layout in ``build_tables``).
  stats.json         method, depth, leaf sizes, collisions, timings.

Hierarchical k-means: level by level, every group of more than ``k`` items is split into ``k``
clusters; a cluster of at most ``k`` items is a leaf and its items take the indices 0..size-1 in
item-id order. The groups of one level are clustered together by ``kmeans.batched_kmeans``: one
call (vmap over the groups, padded to a common size), or, when the sizes differ so much that
padding would cost more than compiling another call shape, a few calls by size class
(``_batches``); no call holds more than ``max_floats`` padded input floats unless one group does.

Padding rule: ``L`` = tree depth (cluster tokens of the deepest leaf + 1). An item whose leaf sits
at a shallower depth ``d`` gets ``[c_1 .. c_d, 0 .. 0, leaf index]``: zeros between its cluster path
and its leaf index, so the last token is always the index within the leaf. Leaf paths form a
prefix-free set (a leaf has no descendants), so two paths differ before any padding zero: codes stay
distinct and of one length, and no code is a prefix of another.

Identical embeddings cannot be split by k-means; when a split makes no progress (one child keeps
every point) the group is dealt out round-robin in item order instead, so the recursion ends and
duplicates still get distinct codes (counted as ``fallback_splits``).
"""
import os
import time

import jax
import numpy as np
from absl import logging

from prorec_jax import artifacts
from prorec_jax import kmeans as kmeans_lib

STAGE = "codes"
CODES, TABLES, STATS = "codes.npy", "prefix_tables.npz", "stats.json"
OUTPUTS = (CODES, TABLES, STATS)
METHODS = ("hkm", "random", "rqvae", "rkmeans")
ALIGN_INPUTS = ("integrated", "collaborative", "semantic_mapped")


# ---------------------------------------------------------------- hierarchical k-means

def _pad_size(n):
  """``n`` rounded up to a multiple of 1/8 of its next power of two: < 12.5% waste, few shapes."""
  granule = max(128, kmeans_lib.next_pow2(n) // 8)
  return -(-n // granule) * granule


def _batches(sizes, max_points, compile_points=0):
  """Which groups share a k-means call, and the padded size of each call.

  Groups are padded to their call's largest one, so mixing sizes wastes work, while every
  distinct call shape costs one XLA compile (worth ``compile_points`` padded points). Groups are
  sorted into size classes (``_pad_size``) and consecutive classes merged into calls where that
  minimises padded points + compiles (dynamic programming over the classes); a call never holds
  more than ``max_points`` padded points unless one group alone does.
  """
  pads = np.array([_pad_size(s) for s in sizes])
  classes = sorted(set(pads.tolist()), reverse=True)
  counts = [int((pads == c).sum()) for c in classes]

  def cost(i, j):  # classes i..j-1 in one bucket, padded to the largest
    g, npad = sum(counts[i:j]), classes[i]
    per_call = max(1, max_points // npad)
    shapes = 1 if g <= per_call or g % per_call == 0 else 2
    return compile_points * shapes + g * npad

  best, cut = [0.0] + [np.inf] * len(classes), [0] * (len(classes) + 1)
  for j in range(1, len(classes) + 1):
    for i in range(j):
      c = best[i] + cost(i, j)
      if c < best[j]:
        best[j], cut[j] = c, i
  out, j = [], len(classes)
  while j > 0:
    i = cut[j]
    idx = np.flatnonzero(np.isin(pads, classes[i:j]))
    idx = idx[np.argsort(-np.asarray(sizes)[idx], kind="stable")]
    per_call = max(1, max_points // classes[i])
    out = [(idx[s:s + per_call], classes[i]) for s in range(0, len(idx), per_call)] + out
    j = i
  return out


# One XLA compile on CPU (~1.5 s) in flops of k-means work: what a padded point must save to pay
# for an extra call shape.
COMPILE_FLOPS = 5e10


def _cluster_level(x_NxD, groups, k, key, max_points, **kw):
  """Each group's labels (and inertia) from batched k-means calls."""
  labels, inertia = [None] * len(groups), np.zeros(len(groups))
  # ~30 Lloyd iterations + the k-means++ trials, 2 flops per multiply-add.
  point_flops = 2 * k * x_NxD.shape[1] * (30 + kmeans_lib.default_local_trials(k))
  calls = _batches([len(g) for g in groups], max_points, COMPILE_FLOPS / point_flops)
  for b, (idx, npad) in enumerate(calls):
    idx_GxN = np.zeros((len(idx), npad), np.int64)
    w_GxN = np.zeros((len(idx), npad), np.float32)
    for row, gi in enumerate(idx):
      idx_GxN[row, :len(groups[gi])] = groups[gi]
      w_GxN[row, :len(groups[gi])] = 1.0
    res = kmeans_lib.batched_kmeans(jax.random.fold_in(key, b), x_NxD[idx_GxN], w_GxN, k=k,
                                    chunk=kmeans_lib.pick_chunk(len(idx), npad, k), **kw)
    lab_GxN, inertia_G = jax.device_get((res.labels, res.inertia))
    for row, gi in enumerate(idx):
      labels[gi] = lab_GxN[row, :len(groups[gi])].astype(np.int64)
      inertia[gi] = inertia_G[row]
  return labels, inertia, len(calls)


def hierarchical_kmeans(x_NxD, k, seed=0, iters=50, tol=1e-4, init="kmeans++",
                        max_floats=1 << 28, level_fn=None):
  """Unique codes [N, L] (int32, tokens in 0..k-1) and a stats dict; see the module docstring.

  One k-means call holds at most ``max_floats`` padded input floats (1 GiB by default) unless a
  single group is larger. ``level_fn(x_NxD, groups, level) -> (labels per group, inertia per
  group, calls)`` replaces the batched JAX k-means of a level (the benchmark plugs scikit-learn in
  to time the same recursion).
  """
  x_NxD = np.asarray(x_NxD, np.float32)
  n, t0 = x_NxD.shape[0], time.time()
  if k < 2:
    raise ValueError(f"k must be >= 2, got {k}")
  if not np.isfinite(x_NxD).all():
    raise ValueError("embeddings hold NaN or inf")
  if n <= k:
    logging.warning("codes: %d items <= k=%d: one level, each item its own index", n, k)
    return np.arange(n, dtype=np.int32)[:, None], dict(
        depth=1, leaves=1, leaf_size_min=n, leaf_size_max=n, leaf_size_mean=float(n),
        kmeans_calls=0, fallback_splits=0, levels=[], seconds=time.time() - t0)
  if level_fn is None:
    key = jax.random.key(seed)
    max_points = max(1, max_floats // x_NxD.shape[1])
    level_fn = lambda x, groups, level: _cluster_level(  # pylint: disable=g-long-lambda
        x, groups, k, jax.random.fold_in(key, level), max_points, iters=iters, tol=float(tol),
        init=init)
  path, levels, leaf_sizes, fallbacks, calls = [], [], [], 0, 0
  leaf_index = np.zeros(n, np.int64)
  leaf_depth = np.zeros(n, np.int64)  # cluster tokens above the item's leaf
  pending = [np.arange(n)]
  while pending:
    level, tl = len(path), time.time()
    labels, inertia, ncalls = level_fn(x_NxD, pending, level)
    calls += ncalls
    tok, nxt = np.full(n, -1, np.int64), []
    for members, lab in zip(pending, labels):
      counts = np.bincount(lab, minlength=k)
      if counts.max() == len(members):  # no progress (identical points): deal out round-robin
        lab = np.arange(len(members)) % k
        counts = np.bincount(lab, minlength=k)
        fallbacks += 1
      tok[members] = lab
      order = np.argsort(lab, kind="stable")  # members stay in item order within a child
      starts = np.cumsum(counts) - counts
      sorted_members = members[order]
      leaf_index[sorted_members] = np.arange(len(members)) - starts[lab[order]]
      leaf_depth[members] = level + 1
      for c in np.flatnonzero(counts):
        if counts[c] > k:
          nxt.append(sorted_members[starts[c]:starts[c] + counts[c]])
        else:
          leaf_sizes.append(int(counts[c]))
    path.append(tok)
    levels.append(dict(level=level + 1, groups=len(pending), calls=ncalls,
                       points=int(sum(len(g) for g in pending)), inertia=float(inertia.sum()),
                       seconds=round(time.time() - tl, 3)))
    logging.info("codes: hkm level %d: %d group(s), %d points, %d call(s), %d split further, %.2fs",
                 level + 1, len(pending), levels[-1]["points"], ncalls, len(nxt),
                 time.time() - tl)
    pending = nxt
  codes = np.zeros((n, len(path) + 1), np.int32)
  for l, tok in enumerate(path):
    codes[:, l] = np.where(l < leaf_depth, tok, 0)  # the padding rule
  codes[:, -1] = leaf_index
  sizes = np.array(leaf_sizes)
  depths, counts = np.unique(leaf_depth + 1, return_counts=True)
  return codes, dict(
      depth=codes.shape[1], leaves=len(sizes), leaf_size_min=int(sizes.min()),
      leaf_size_max=int(sizes.max()), leaf_size_mean=float(sizes.mean()),
      items_by_code_depth={str(d): int(c) for d, c in zip(depths, counts)},
      kmeans_calls=calls, fallback_splits=fallbacks, levels=levels, seconds=time.time() - t0)


# ---------------------------------------------------------------- prefix tables (the trie)

def build_tables(codes_NxL, k):
  """Dense trie of the codes of items 1..N (``codes_NxL[i - 1]`` is item i's code).

  Prefixes of length ``l`` are numbered ``0..num_prefixes[l]-1`` (level 0: the empty prefix, id 0);
  ``P`` = max over levels. Arrays (what ``prefix_tables.npz`` holds):
    child         int32 [L, P, k]: ``child[l, p, t]`` is the id of prefix ``p`` + token ``t`` at
                  level ``l + 1``, or at the last level (``l = L - 1``) the item id of the full
                  code; -1 when no code starts that way. A beam's state after ``L`` steps is thus
                  the item id.
    valid         bool  [L, P, k]: ``child >= 0``, the constrained-decoding mask.
    item          int32 [P, k]: ``child[L - 1]`` with 0 (padding) for "no item".
    num_prefixes  int32 [L]: real rows per level; rows beyond are all invalid.
    k             int32 scalar: the codebook size (tokens 0..k-1 at every level).
  """
  codes_NxL = np.asarray(codes_NxL, np.int64)
  n, depth = codes_NxL.shape
  if codes_NxL.min() < 0 or codes_NxL.max() >= k:
    raise ValueError(
        f"code tokens must lie in 0..{k - 1}, got {codes_NxL.min()}..{codes_NxL.max()}")
  pid, num, rows = np.zeros(n, np.int64), [], []
  for l in range(depth):
    num.append(int(pid.max()) + 1)
    key = pid * k + codes_NxL[:, l]
    if l < depth - 1:
      _, target = np.unique(key, return_inverse=True)
    else:
      target = np.arange(1, n + 1)
    rows.append((pid, codes_NxL[:, l], target))
    pid = target
  child = np.full((depth, max(num), k), -1, np.int32)
  for l, (p, t, target) in enumerate(rows):
    child[l, p, t] = target
  return dict(child=child, valid=child >= 0, item=np.maximum(child[-1], 0),
              num_prefixes=np.array(num, np.int32), k=np.int32(k))


def load_tables(workdir):
  """The prefix tables of a finished codes stage as a dict of numpy arrays (see build_tables)."""
  with np.load(os.path.join(artifacts.stage_dir(workdir, STAGE), TABLES)) as z:
    return {name: z[name] for name in z.files}


def walk(tables, codes_BxL):
  """Item id reached by each code through the tables (0 where the trie rejects it)."""
  codes_BxL = np.asarray(codes_BxL, np.int64)
  state = np.zeros(len(codes_BxL), np.int64)
  ok = np.ones(len(codes_BxL), bool)
  child, k = tables["child"], int(tables["k"])
  for l in range(child.shape[0]):
    t = codes_BxL[:, l]
    ok &= (t >= 0) & (t < k)
    nxt = child[l, state, np.clip(t, 0, k - 1)]
    ok &= nxt >= 0
    state = np.where(ok, nxt, 0)
  return np.where(ok, state, 0)


# ---------------------------------------------------------------- the stage

def input_path(config, workdir):
  """(path of the matrix to quantise, the upstream stage that wrote it)."""
  name = config.codes.input
  if name == "semantic":
    return os.path.join(workdir, "embed", "semantic.npy"), "embed"
  if name not in ALIGN_INPUTS:
    raise ValueError(f"codes.input must be 'semantic' or one of {ALIGN_INPUTS}, got {name!r}")
  return os.path.join(workdir, "align", f"{name}.npy"), "align"


def load_input(config, workdir):
  """Rows 1..N of the configured embedding matrix, checked; ``num_items`` from the data stage."""
  path, stage = input_path(config, workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage={stage} first")
  x = np.load(path)
  stats_path = os.path.join(workdir, "data", "stats.json")
  if os.path.exists(stats_path):
    n = artifacts.load_json(stats_path)["num_items"]
    if x.ndim != 2 or x.shape[0] != n + 1:
      raise ValueError(f"{path}: shape {x.shape}, expected [{n + 1}, D] (num_items + 1 rows)")
  elif x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"{path}: shape {x.shape}, expected [num_items + 1, D]")
  bad = np.flatnonzero(~np.isfinite(x[1:]).all(axis=1)) + 1
  if bad.size:
    raise ValueError(f"{path}: NaN or inf in {bad.size} item rows (items {bad[:5].tolist()}"
                     f"{' ...' if bad.size > 5 else ''}); fix the {stage} stage output")
  return x[1:].astype(np.float32), stage


def quantize(x_NxD, config):
  """Codes [N, L] int32 of the configured method, and its stats."""
  from prorec_jax import quantizers  # pylint: disable=g-import-not-at-top
  q = config.codes
  if q.k < 2:
    raise ValueError(f"codes.k must be >= 2, got {q.k}")
  if q.method not in METHODS:
    raise ValueError(f"codes.method must be one of {METHODS}, got {q.method!r}")
  if q.method == "hkm":
    return hierarchical_kmeans(x_NxD, q.k, config.seed, q.kmeans_iters, q.kmeans_tol, q.init)
  if q.method == "random":
    return quantizers.random_codes(len(x_NxD), q.k, config.seed)
  if q.method == "rkmeans":
    return quantizers.residual_kmeans(x_NxD, q.k, q.levels, config.seed, q.kmeans_iters,
                                      q.kmeans_tol, q.init)
  return quantizers.rqvae(x_NxD, q.k, q.levels, config.seed, **q.rqvae.to_dict())


def check_codes(codes_NxL, tables):
  """Raises unless every item has its own code and the tables accept exactly those codes."""
  n = len(codes_NxL)
  distinct = len(np.unique(codes_NxL, axis=0))
  if distinct != n:
    raise RuntimeError(f"codes are not unique: {n - distinct} items share a code")
  if not np.array_equal(walk(tables, codes_NxL), np.arange(1, n + 1)):
    raise RuntimeError("prefix tables disagree with the code table")
  return distinct


def fingerprint(config, workdir):
  _, upstream = input_path(config, workdir)
  return artifacts.fingerprint(config, ["codes", "seed"], workdir, upstream=(upstream,))


def run(config, workdir):
  fp = fingerprint(config, workdir)
  out = artifacts.stage_dir(workdir, STAGE)
  if not artifacts.begin(workdir, STAGE, fp, OUTPUTS):
    return
  t0 = time.time()
  x_NxD, _ = load_input(config, workdir)
  q = config.codes
  logging.info("codes: %s on %s %s, k=%d", q.method, q.input, x_NxD.shape, q.k)
  codes_NxL, info = quantize(x_NxD, config)
  tables = build_tables(codes_NxL, q.k)
  distinct = check_codes(codes_NxL, tables)
  codes = np.concatenate([np.full((1, codes_NxL.shape[1]), -1, np.int32), codes_NxL]).astype(
      np.int32)
  stats = dict(info, method=q.method, input=q.input, k=q.k, num_items=len(codes_NxL),
               code_length=int(codes.shape[1]), distinct_codes=distinct, shared_codes=0,
               num_prefixes=tables["num_prefixes"].tolist(), seconds_total=time.time() - t0)
  artifacts.save_npy(os.path.join(out, CODES), codes)
  artifacts.save_npz(os.path.join(out, TABLES), **tables)
  artifacts.save_json(os.path.join(out, STATS), stats)
  logging.info("codes: %d items, code length %d, all codes distinct, prefixes per level %s, "
               "%.1fs", len(codes_NxL), codes.shape[1], stats["num_prefixes"], time.time() - t0)
  artifacts.mark_done(workdir, STAGE, fp, seconds=time.time() - t0)
