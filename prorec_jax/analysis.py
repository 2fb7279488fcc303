"""The ``analyze`` stage: semantic dominance of a fused item embedding, and a t-SNE figure.

Dominance (our definition; the paper's Table 4 compares distributions by KL divergence, but its
exact formula is not given). For an embedding ``E`` let ``u_i = E_i / |E_i|`` and, for every item
``i``, let its neighbourhood distribution over the other items be

    P_E(j | i) = exp(b_i u_i . u_j) / sum_{j' != i} exp(b_i u_i . u_j'),   j != i

where the inverse temperature ``b_i`` is calibrated per item so that ``P_E(. | i)`` has perplexity
``analyze.perplexity`` (entropy = log 30; the affinities t-SNE uses), or, with
``analyze.neighbourhood = "temperature"``, fixed at ``1 / analyze.temperature``. Calibration makes
the measure compare neighbourhood structure rather than how spread an embedding's cosines are (a
fixed temperature makes a barely trained, near-uniform embedding look "close" to everything).
For the fused embedding ``F`` and each source ``S`` (semantic, collaborative):

    KL(F || S) = 1/N sum_i sum_{j != i} P_F(j | i) log(P_F(j | i) / P_S(j | i))
    share(S)   = (1 / KL(F || S)) / sum_S' (1 / KL(F || S'))   (= KL_other / (KL_sem + KL_col))

so a source the fused embedding copies exactly gets 100%, and two sources it mixes with equal
weight get about 50% each. Alongside: the share under the fixed temperature, kNN overlap@k (mean
fraction of the ``k`` cosine nearest neighbours the fused and the source embedding share) and
linear CKA (Kornblith et al. 2019) between them.

Sources: the semantic reference is ``embed/semantic.npy``; the collaborative one is the
``align/integrated.npy`` of ``analyze.collab_workdir`` (a ``fusion=collab_only`` run), or, when that
is empty, this run's ``align/collaborative.npy`` (not independent of the fused embedding: for
``fusion=prorec`` the integrated embedding IS the aligned collaborative table). The fused embedding
is ``align/integrated.npy``. ``N x N`` distributions are computed ``chunk`` rows at a time; above
``analyze.max_items`` items a seeded random subset of that size is used.

Outputs in ``workdir/analyze``: dominance.json, tsne.npz and figure5_tsne.png (t-SNE of the fused,
semantic and collaborative embeddings, coloured by k-means cluster of the fused one).
"""
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from prorec_jax import artifacts
from prorec_jax import kmeans as kmeans_lib

STAGE = "analyze"
DOMINANCE, TSNE, FIGURE = "dominance.json", "tsne.npz", "figure5_tsne.png"
SOURCES = ("semantic", "collaborative")


def _unit(x):
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _log_softmax_rows(cos_CxN, self_CxN, scale_C):
  lp = jax.nn.log_softmax(cos_CxN * scale_C[:, None], axis=-1)
  return lp, -jnp.sum(jnp.where(self_CxN, 0.0, jnp.exp(lp) * lp), axis=-1)


def _calibrated_scale(cos_CxN, self_CxN, log_perplexity, steps=30):
  """Per row, the inverse temperature whose distribution has entropy log(perplexity) (as t-SNE
  calibrates its input affinities), by bisection on its log over [e^-5, e^10]."""
  lo = jnp.full(cos_CxN.shape[:1], -5.0)
  hi = jnp.full(cos_CxN.shape[:1], 10.0)

  def step(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    too_flat = _log_softmax_rows(cos_CxN, self_CxN, jnp.exp(mid))[1] > log_perplexity
    return jnp.where(too_flat, mid, lo), jnp.where(too_flat, hi, mid)

  lo, hi = jax.lax.fori_loop(0, steps, step, (lo, hi))
  return jnp.exp(0.5 * (lo + hi))


@functools.partial(jax.jit, static_argnames=("knn", "calibrate"))
def _chunk_stats(rows_C, u_fused, u_sources, inv_temp, log_perplexity, knn, calibrate):
  """Per row of the chunk: KL(P_F || P_S) and kNN overlap for each source (rows -1 = padding)."""
  n = u_fused.shape[0]
  self_CxN = rows_C[:, None] == jnp.arange(n)[None, :]

  def logp(u):
    cos_CxN = jnp.where(self_CxN, -jnp.inf, u[rows_C] @ u.T)
    scale_C = (_calibrated_scale(cos_CxN, self_CxN, log_perplexity) if calibrate
               else jnp.full(rows_C.shape, inv_temp))
    return _log_softmax_rows(cos_CxN, self_CxN, scale_C)[0], jax.lax.top_k(cos_CxN, knn)[1]

  lf_CxN, nn_f = logp(u_fused)
  pf_CxN = jnp.exp(lf_CxN)
  kls, overlaps = [], []
  for u in u_sources:
    ls_CxN, nn_s = logp(u)
    kls.append(jnp.sum(jnp.where(self_CxN, 0.0, pf_CxN * (lf_CxN - ls_CxN)), axis=-1))
    shared = jnp.any(nn_f[:, :, None] == nn_s[:, None, :], axis=-1)
    overlaps.append(jnp.mean(shared, axis=-1))
  return jnp.stack(kls), jnp.stack(overlaps)


def neighbourhood_stats(fused, sources, temperature=0.1, knn=10, chunk=512, perplexity=None):
  """Mean KL(P_F || P_S) and kNN overlap@knn of the fused embedding against each source.

  With ``perplexity`` every item's distribution is calibrated to it; else ``temperature`` is used.
  """
  n = fused.shape[0]
  if any(s.shape[0] != n for s in sources):
    raise ValueError(f"item counts differ: fused {n}, sources {[s.shape[0] for s in sources]}")
  knn = min(knn, n - 1)
  log_perp = np.log(min(perplexity, (n - 1) / 3)) if perplexity else 0.0
  u_f, u_s = _unit(fused), tuple(_unit(s) for s in sources)
  chunk = min(chunk, n)
  kl, ov = np.zeros(len(sources)), np.zeros(len(sources))
  for start in range(0, n, chunk):
    rows = np.arange(start, start + chunk)
    valid = rows < n
    k_SxC, o_SxC = _chunk_stats(jnp.asarray(np.where(valid, rows, -1), jnp.int32), u_f, u_s,
                                1.0 / temperature, log_perp, knn, bool(perplexity))
    kl += np.asarray(k_SxC)[:, valid].sum(1)
    ov += np.asarray(o_SxC)[:, valid].sum(1)
  return kl / n, ov / n


def shares(kls):
  """Inverse-KL shares; a source with KL 0 takes everything (split evenly among such sources)."""
  kls = np.maximum(np.asarray(kls, np.float64), 0.0)
  exact = kls <= 1e-12
  if exact.any():
    return exact / exact.sum()
  inv = 1.0 / kls
  return inv / inv.sum()


def linear_cka(x, y):
  """Linear CKA between two representations of the same items (any widths)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  x = x - x.mean(0)
  y = y - y.mean(0)
  num = np.linalg.norm(y.T @ x) ** 2
  den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
  return float(num / den) if den > 0 else 0.0


def dominance(fused, sources, perplexity=30.0, temperature=0.1, knn=10, chunk=512):
  """{source: {kl, share, share_fixed_temperature, knn_overlap@k, cka}} for a dict of sources.

  ``kl``/``share`` use perplexity-calibrated neighbourhoods, or the fixed ``temperature`` when
  ``perplexity`` is None (then both shares coincide).
  """
  names = list(sources)
  srcs = [sources[s] for s in names]
  kls, overlaps = neighbourhood_stats(fused, srcs, temperature, knn, chunk, perplexity)
  fixed = kls if perplexity is None else neighbourhood_stats(fused, srcs, temperature, 1, chunk)[0]
  share, share_t = shares(kls), shares(fixed)
  return {s: {"kl": float(kls[i]), "share": float(share[i]),
              "share_fixed_temperature": float(share_t[i]),
              f"knn_overlap@{knn}": float(overlaps[i]), "cka": linear_cka(fused, sources[s])}
          for i, s in enumerate(names)}


def table(rows):
  """Markdown table from {label: dominance dict}."""
  lines = ["| fused embedding | source | KL(fused‖source) | share | share (fixed T) | "
           "kNN overlap | linear CKA |", "|---|---|---|---|---|---|---|"]
  for label, dom in rows.items():
    for s in sorted(dom, key=lambda s: s != "semantic"):
      m = dom[s]
      ov = next(v for k, v in m.items() if k.startswith("knn_overlap"))
      lines.append(f"| {label} | {s} | {m['kl']:.4f} | {100 * m['share']:.2f}% | "
                   f"{100 * m['share_fixed_temperature']:.2f}% | {ov:.3f} | {m['cka']:.3f} |")
  return "\n".join(lines)


def dominance_table(workdirs):
  """One table of the finished analyze stages of several runs, labelled by their fusion."""
  rows = {}
  for wd in workdirs:
    d = artifacts.load_json(os.path.join(artifacts.stage_dir(wd, STAGE), DOMINANCE))
    rows[f"{d['fusion']} ({os.path.basename(os.path.normpath(wd))})"] = d["sources"]
  return table(rows)


# ---------------------------------------------------------------- t-SNE (Figure 5)

def tsne_figure(embeddings, labels, seed, perplexity, png_path):
  """2-D t-SNE of each embedding (same items), coloured by ``labels``; returns the coordinates."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  n = len(labels)
  coords = {}
  for name, x in embeddings.items():
    # One OpenMP thread: the layout is then reproducible, and a busy machine cannot stall the
    # threads' barriers (we measured 0.4 s -> 8 s for 120 points on a loaded 2-core box).
    with threadpool_limits(1, user_api="openmp"):
      coords[name] = TSNE(2, perplexity=min(perplexity, (n - 1) / 3), init="pca",
                          random_state=seed).fit_transform(np.asarray(x, np.float32))
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("analyze: matplotlib is not installed; t-SNE coordinates saved, no PNG")
    return coords
  fig, axes = plt.subplots(1, len(coords), figsize=(5 * len(coords), 5))
  for ax, (name, xy) in zip(np.atleast_1d(axes), coords.items()):
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("t-SNE of item embeddings, coloured by k-means cluster of the fused embedding")
  fig.tight_layout()
  tmp = png_path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, png_path)
  return coords


# ---------------------------------------------------------------- the stage

def _load(path, what, n_rows=None):
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing ({what})")
  x = np.load(path)
  if x.ndim != 2 or (n_rows is not None and x.shape[0] != n_rows):
    raise ValueError(f"{path}: shape {x.shape}, expected [{n_rows or 'num_items + 1'}, D]")
  bad = np.flatnonzero(~np.isfinite(x[1:]).all(axis=1)) + 1
  if bad.size:
    raise ValueError(f"{path}: NaN or inf in {bad.size} item rows (first: item {bad[0]})")
  return x[1:].astype(np.float32)  # row 0 is padding


def load_embeddings(config, workdir):
  """(fused, {source: embedding}, notes) for items 1..N."""
  fused = _load(os.path.join(workdir, "align", "integrated.npy"), "run --stage=align")
  n_rows = fused.shape[0] + 1
  sem = _load(os.path.join(workdir, "embed", "semantic.npy"), "run --stage=embed", n_rows)
  collab_wd = config.analyze.collab_workdir
  if collab_wd:
    col_path = os.path.join(collab_wd, "align", "integrated.npy")
    notes = dict(collab_reference=col_path, collab_independent=True)
  else:
    col_path = os.path.join(workdir, "align", "collaborative.npy")
    notes = dict(collab_reference=col_path, collab_independent=False)
    logging.warning(
        "analyze: analyze.collab_workdir is empty; the collaborative reference is this run's "
        "align/collaborative.npy. For fusion=prorec the integrated embedding IS that aligned "
        "table, so the reference is not independent; set analyze.collab_workdir to the workdir "
        "of a fusion=collab_only run for Table 4.")
  col = _load(col_path, "the collaborative reference", n_rows)
  return fused, dict(semantic=sem, collaborative=col), notes


def _fingerprint(config, workdir):
  fp = artifacts.fingerprint(config, ["analyze", "seed"], workdir, upstream=("embed", "align"))
  if config.analyze.collab_workdir:
    fp += "+" + artifacts.stage_fingerprint(config.analyze.collab_workdir, "align")
  return fp


def run(config, workdir):
  z, out = config.analyze, artifacts.stage_dir(workdir, STAGE)
  fp = _fingerprint(config, workdir)
  if not artifacts.begin(workdir, STAGE, fp, (DOMINANCE, TSNE)):
    return
  t0 = time.time()
  fused, sources, notes = load_embeddings(config, workdir)
  n = fused.shape[0]
  rng = np.random.default_rng(config.seed)
  items = np.arange(n) if n <= z.max_items else np.sort(rng.choice(n, z.max_items, replace=False))
  if z.neighbourhood not in ("perplexity", "temperature"):
    raise ValueError(f"analyze.neighbourhood must be 'perplexity' or 'temperature', "
                     f"got {z.neighbourhood!r}")
  perplexity = z.perplexity if z.neighbourhood == "perplexity" else None
  dom = dominance(fused[items], {s: e[items] for s, e in sources.items()}, perplexity,
                  z.temperature, z.knn)
  fusion = config.align.fusion
  report = dict(notes, fusion=fusion, neighbourhood=z.neighbourhood, perplexity=z.perplexity,
                temperature=z.temperature, knn=z.knn, num_items=n, items_used=len(items),
                sources=dom, seconds_dominance=time.time() - t0)
  text = table({fusion: dom})
  logging.info("analyze: %s: semantic share %.2f%%, collaborative share %.2f%% (%d items, %s)",
               fusion, 100 * dom["semantic"]["share"], 100 * dom["collaborative"]["share"],
               len(items), z.neighbourhood)
  print(f"\nSemantic dominance of the {fusion} embedding ({os.path.basename(workdir)}):\n{text}")

  t1 = time.time()
  sample = np.sort(rng.choice(n, min(n, z.tsne_items), replace=False))
  k = max(2, min(z.clusters, len(sample) - 1))
  labels = np.asarray(kmeans_lib.kmeans(jax.random.key(config.seed), fused[sample], k).labels)
  embs = {f"fused ({fusion})": fused[sample], **{s: e[sample] for s, e in sources.items()}}
  os.makedirs(out, exist_ok=True)
  coords = tsne_figure(embs, labels, config.seed, z.perplexity, os.path.join(out, FIGURE))
  artifacts.save_npz(os.path.join(out, TSNE), items=sample + 1, clusters=labels,
                     **{f"xy_{name.split()[0]}": xy for name, xy in coords.items()})
  report["seconds_tsne"] = time.time() - t1
  artifacts.save_json(os.path.join(out, DOMINANCE), report)
  artifacts.mark_done(workdir, STAGE, fp, seconds=time.time() - t0)
