"""Pure, jitted, batched k-means: one compiled call clusters many padded groups at once.

``batched_kmeans`` vmaps one k-means over a leading group axis, so the hierarchical quantiser
clusters every group of a tree level in one call instead of a Python loop over clusters. Groups
of different sizes are padded to a common size and padded points carry weight 0: they never move a
centroid, never seed one and never count in the inertia.

One k-means: greedy k-means++ (as scikit-learn: ``2 + log k`` candidates per step, the one that
lowers the potential most wins) or uniform random init, then Lloyd iterations in a
``lax.while_loop`` with distances by one matmul, empty clusters re-seeded at the farthest points,
and a stop when the squared centroid shift falls under ``tol`` times the mean feature variance
(scikit-learn's rule) or no label changes.

Sampling uses one uniform per draw (drawn on the host from the key, ``init_uniforms``) and a search
in the cumulative weights, so appending zero-weight points does not change which points are drawn:
padding is invisible to the result. Compile time matters on CPU (1-2 s per program, as much as the
Beauty k-means runs), hence the choices noted where they are made.
"""
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

INITS = ("kmeans++", "random")


class KMeansResult(NamedTuple):
  centroids: jax.Array  # [..., K, D]
  labels: jax.Array  # [..., N] int32, cluster of each point (padded points: arbitrary)
  inertia: jax.Array  # [...], weighted sum of squared distances to the assigned centroid
  iterations: jax.Array  # [...] Lloyd iterations run


def default_local_trials(k):
  return 2 + int(math.log(k))


def _sq_dist(x_NxD, xx_N, c_KxD):
  """Squared distances by one matmul, clamped at 0 (the expansion can round below it)."""
  cc_K = jnp.sum(c_KxD * c_KxD, axis=-1)
  d_NxK = xx_N[:, None] - 2.0 * (x_NxD @ c_KxD.T) + cc_K[None, :]
  return jnp.maximum(d_NxK, 0.0)


_BLOCK = 128


def _cumsum(p_N):
  """Inclusive cumulative sum by blocked triangular matmuls.

  ``jnp.cumsum`` lowers to an associative scan on CPU that costs ~0.3 s of compile per use; inside
  k-means++ it dominated compile time. Matmuls compile in no time and run fast.
  """
  n = p_N.shape[0]
  b = min(n, _BLOCK)
  upper_BxB = jnp.triu(jnp.ones((b, b), p_N.dtype))  # [i, j] = 1 where i <= j
  if n <= b:
    return p_N @ upper_BxB
  m = -(-n // b)
  within_MxB = jnp.pad(p_N, (0, m * b - n)).reshape(m, b) @ upper_BxB
  totals_M = within_MxB[:, -1]
  offsets_M = _cumsum(totals_M) - totals_M
  return (within_MxB + offsets_M[:, None]).reshape(-1)[:n]


def _draw(u_T, p_N):
  """Indices drawn with probability proportional to ``p_N`` (>= 0, not all 0), one per uniform.

  The index is the count of cumulative weights at or under the target: a search without a loop.
  Rounding can land on a zero-weight point; such a draw takes the heaviest point instead.
  """
  cum_N = _cumsum(p_N)
  idx_T = jnp.sum(cum_N[None, :] <= (u_T * cum_N[-1])[:, None], axis=1)
  last = jnp.max(jnp.where(p_N > 0, jnp.arange(p_N.shape[0]), 0))
  idx_T = jnp.minimum(idx_T, last)
  return jnp.where(p_N[idx_T] > 0, idx_T, jnp.argmax(p_N)).astype(jnp.int32)


def _init_random(u_K, x_NxD, w_N, k):
  """k distinct points drawn uniformly among the weighted ones (repeats only if fewer exist)."""

  def step(i, carry):
    c_KxD, avail_N = carry
    p_N = jnp.where(jnp.any(avail_N > 0), avail_N, (w_N > 0).astype(x_NxD.dtype))
    j = _draw(u_K[i][None], p_N)[0]
    return c_KxD.at[i].set(x_NxD[j]), avail_N.at[j].set(0.0)

  c_KxD = jnp.zeros((k, x_NxD.shape[1]), x_NxD.dtype)
  return jax.lax.fori_loop(0, k, step, (c_KxD, (w_N > 0).astype(x_NxD.dtype)))[0]


def _init_kmeanspp(u_KxT, x_NxD, xx_N, w_N, k):
  """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant), weighted."""
  first = _draw(u_KxT[0, :1], w_N)[0]
  c_KxD = jnp.zeros((k, x_NxD.shape[1]), x_NxD.dtype).at[0].set(x_NxD[first])
  mind_N = _sq_dist(x_NxD, xx_N, x_NxD[first][None])[:, 0]

  def step(i, carry):
    c_KxD, mind_N = carry
    pot = jnp.sum(w_N * mind_N)
    # All remaining weight on already chosen points (duplicates): fall back to the weights alone.
    p_N = jnp.where(pot > 0, w_N * mind_N, w_N)
    cand_T = _draw(u_KxT[i], p_N)
    d_NxT = jnp.minimum(mind_N[:, None], _sq_dist(x_NxD, xx_N, x_NxD[cand_T]))
    best = jnp.argmin(jnp.sum(w_N[:, None] * d_NxT, axis=0))
    return c_KxD.at[i].set(x_NxD[cand_T[best]]), d_NxT[:, best]

  return jax.lax.fori_loop(1, k, step, (c_KxD, mind_N))[0]


def _nearest(x_NxD, xx_N, c_KxD):
  """Nearest centroid and squared distance. Two plain reductions (min, then the first index
  reaching it) run ~2x faster on CPU than XLA's argmin, a variadic (value, index) reduction."""
  s_NxK = jnp.sum(c_KxD * c_KxD, axis=-1)[None, :] - 2.0 * (x_NxD @ c_KxD.T)  # |c|^2 - 2 x.c
  min_N = jnp.min(s_NxK, axis=1)
  k = c_KxD.shape[0]
  idx_N = jnp.min(jnp.where(s_NxK <= min_N[:, None], jnp.arange(k, dtype=jnp.int32), k), axis=1)
  return jnp.minimum(idx_N, k - 1), jnp.maximum(min_N + xx_N, 0.0)


def _assign(x_NxD, xx_N, c_KxD, chunk):
  """Nearest centroid and its squared distance, ``chunk`` points at a time to bound memory."""
  n, d = x_NxD.shape
  if chunk >= n:
    return _nearest(x_NxD, xx_N, c_KxD)
  labels, mind = jax.lax.map(lambda a: _nearest(a[0], a[1], c_KxD),
                             (x_NxD.reshape(n // chunk, chunk, d), xx_N.reshape(n // chunk, chunk)))
  return labels.reshape(n), mind.reshape(n)


def _update(x_NxD, w_N, labels_N, mind_N, c_KxD):
  """Weighted means; an empty cluster moves to the next-farthest point (if it is not at 0)."""
  k = c_KxD.shape[0]
  sums_KxD = jax.ops.segment_sum(x_NxD * w_N[:, None], labels_N, k)
  counts_K = jax.ops.segment_sum(w_N, labels_N, k)
  means_KxD = sums_KxD / jnp.maximum(counts_K, 1e-12)[:, None]
  empty_K = counts_K <= 0
  far_dist, far = jax.lax.top_k(jnp.where(w_N > 0, mind_N, -1.0), min(k, w_N.shape[0]))
  rank_K = jnp.minimum(jnp.cumsum(empty_K) - 1, far.shape[0] - 1)
  reseed_K = empty_K & (jnp.cumsum(empty_K) <= far.shape[0]) & (far_dist[rank_K] > 0)
  far_K = far[rank_K]
  new_KxD = jnp.where(empty_K[:, None], c_KxD, means_KxD)
  return jnp.where(reseed_K[:, None], x_NxD[far_K], new_KxD)


def kmeans_single(u_KxT, x_NxD, w_N, k, iters=50, tol=1e-4, init="kmeans++", chunk=None):
  """k-means of one (padded) point set; see the module docstring. Not jitted: jit the caller.

  ``u_KxT`` holds the uniforms the init draws: ``T`` candidates per centre for k-means++ (row 0:
  the first centre), one per centre (column 0) for random init.
  """
  if init not in INITS:
    raise ValueError(f"k-means init must be one of {INITS}, got {init!r}")
  n = x_NxD.shape[0]
  chunk = n if chunk is None else chunk
  if n % chunk:
    raise ValueError(f"chunk {chunk} must divide the number of (padded) points {n}")
  w_N = w_N.astype(x_NxD.dtype)
  x_NxD = jnp.where(w_N[:, None] > 0, x_NxD, 0.0)  # padded rows may hold anything, even NaN
  xx_N = jnp.sum(x_NxD * x_NxD, axis=1)
  wsum = jnp.maximum(jnp.sum(w_N), 1e-12)
  mean_D = jnp.sum(x_NxD * w_N[:, None], axis=0) / wsum
  var = jnp.mean(jnp.sum(w_N[:, None] * (x_NxD - mean_D) ** 2, axis=0) / wsum)
  tol_abs = tol * var
  if init == "random":
    c_KxD = _init_random(u_KxT[:, 0], x_NxD, w_N, k)
  else:
    c_KxD = _init_kmeanspp(u_KxT, x_NxD, xx_N, w_N, k)

  def cond(s):
    i, _, _, shift, changed = s
    return (i < iters) & (shift > tol_abs) & changed

  def body(s):
    i, c_KxD, old_N, _, _ = s
    labels_N, mind_N = _assign(x_NxD, xx_N, c_KxD, chunk)
    new_KxD = _update(x_NxD, w_N, labels_N, mind_N, c_KxD)
    changed = jnp.any((labels_N != old_N) & (w_N > 0))
    return i + 1, new_KxD, labels_N, jnp.sum((new_KxD - c_KxD) ** 2), changed

  s0 = (jnp.int32(0), c_KxD, jnp.full((n,), -1, jnp.int32), jnp.inf, jnp.bool_(True))
  i, c_KxD, _, _, _ = jax.lax.while_loop(cond, body, s0)
  labels_N, mind_N = _assign(x_NxD, xx_N, c_KxD, chunk)  # labels that match the final centroids
  return KMeansResult(c_KxD, labels_N, jnp.sum(w_N * mind_N), i)


def init_uniforms(key, shape):
  """The uniforms the init draws, made on the host from ``key``'s bits (numpy's PCG64).

  A few thousand numbers: drawing them inside the compiled k-means (threefry or rbg) added ~0.4 s
  of XLA compile per program on CPU, about what the whole Beauty k-means takes to run.
  """
  seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _batched(u_GxKxT, x_GxNxD, w_GxN, k, iters, tol, init, chunk):
  fn = functools.partial(kmeans_single, k=k, iters=iters, tol=tol, init=init, chunk=chunk)
  if x_GxNxD.shape[0] == 1:  # one group: plain matmuls run faster than batch-of-one ones on CPU
    return jax.tree.map(lambda a: a[None], fn(u_GxKxT[0], x_GxNxD[0], w_GxN[0]))
  return jax.vmap(fn)(u_GxKxT, x_GxNxD, w_GxN)


# XLA:CPU spends 1-2 s compiling a k-means program, as long as the Beauty k-means runs. Measured on
# a 2-core CPU: without LLVM optimisation it compiles ~3x faster and runs ~2.5x slower (the better
# deal for small calls); without the fusion emitters it compiles ~30% faster and runs ~5% slower
# (the better deal for mid-sized calls). Large calls keep XLA's defaults.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
MID_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
FAST_COMPILE_FLOPS = 2e9  # work = iterations x points x k x D (or a program's flops)
MID_COMPILE_FLOPS = 1e11
_STATIC = ("k", "iters", "tol", "init", "chunk")
_JITTED = {None: jax.jit(_batched, static_argnames=_STATIC)}


def compile_options(work):
  """XLA compiler options for a CPU program doing ``work``; None (defaults) elsewhere or when big."""
  if jax.default_backend() != "cpu" or work >= MID_COMPILE_FLOPS:
    return None
  return FAST_COMPILE_OPTIONS if work < FAST_COMPILE_FLOPS else MID_COMPILE_OPTIONS


def _jitted(options):
  key = tuple(sorted(options.items())) if options else None
  if key not in _JITTED:
    _JITTED[key] = jax.jit(_batched, static_argnames=_STATIC, compiler_options=options)
  return _JITTED[key]


def batched_kmeans(key, x_GxNxD, w_GxN, k, iters=50, tol=1e-4, init="kmeans++", trials=None,
                   chunk=None, compile_for=None):
  """k-means of every group at once: one compiled call for ``G`` groups padded to ``N`` points.

  The compiler options follow the work ``iters * G * N * k * D`` (``compile_options``); pass
  ``compile_for`` to override that estimate. They change no result beyond float rounding.
  """
  g, n, d = x_GxNxD.shape
  if init not in INITS:
    raise ValueError(f"k-means init must be one of {INITS}, got {init!r}")
  trials = 1 if init == "random" else (trials or default_local_trials(k))
  fn = _jitted(compile_options(iters * g * n * k * d if compile_for is None else compile_for))
  return fn(init_uniforms(key, (g, k, trials)), x_GxNxD, w_GxN, k=k, iters=iters, tol=float(tol),
            init=init, chunk=chunk)


def kmeans(key, x_NxD, k, w_N=None, iters=50, tol=1e-4, init="kmeans++", trials=None,
           chunk=None, compile_for=None):
  """k-means of one point set (a batch of one); arrays come back without the group axis."""
  x_NxD = jnp.asarray(x_NxD, jnp.float32)
  w_N = jnp.ones(x_NxD.shape[0], jnp.float32) if w_N is None else jnp.asarray(w_N, jnp.float32)
  out = batched_kmeans(key, x_NxD[None], w_N[None], k=k, iters=iters, tol=tol, init=init,
                       trials=trials, chunk=chunk, compile_for=compile_for)
  return jax.tree.map(lambda a: a[0], out)


def pick_chunk(groups, n, k, block=1 << 20, budget=1 << 24):
  """Rows per distance block: the largest power-of-two divisor of ``n`` (or ``n``) whose
  ``chunk x k`` block stays under ``block`` floats (cache-sized: ~15% faster on CPU than one big
  block) and whose ``groups`` blocks together stay under ``budget`` floats (memory)."""
  chunk = n
  while chunk > 256 and chunk % 2 == 0 and (chunk * k > block or groups * chunk * k > budget):
    chunk //= 2
  return chunk


def next_pow2(n):
  return 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))
