"""Full-catalog ranking with DIN: dot-product shortlist, then exact DIN scores on the shortlist.

DIN's target attention makes every (user, item) score cost a pass of the activation unit over the
whole history, so exact scores for every item of a 12k catalog and 22k users are ~100 TFLOP, out of
reach of a CPU. Instead each user's ``shortlist`` best items by ``<mean history embedding, e_i>``
are re-scored exactly; items outside rank below them. ``coverage`` (the share of targets inside the
shortlist) bounds the recall this can reach and is reported with the metrics. ``shortlist=0``
scores every item exactly.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from prorec_jax import metrics as metrics_lib
from prorec_jax import sharding

_FLOAT_BUDGET = 1 << 25  # floats in the [E, C, L, D] attention tensor of one eval batch


def make_ranker(model, num_items, width, max_history, shortlist, mesh, k=20):
  n_cand = num_items if shortlist <= 0 or shortlist >= num_items else shortlist
  exact = n_cand == num_items
  ndev = sharding.data_size(mesh)
  per_dev = max(1, _FLOAT_BUDGET // (n_cand * max_history * width * ndev))
  batch = per_dev * ndev

  def rank(params, hist_ExL, target_E):
    if exact:
      cands = jnp.broadcast_to(jnp.arange(1, num_items + 1), (hist_ExL.shape[0], num_items))
    else:
      q_ExD = model.apply(params, hist_ExL, method="query")
      table = model.apply(params, method="table")
      s = (q_ExD @ table.T).at[:, 0].set(-jnp.inf)
      cands = jax.lax.top_k(s, n_cand)[1]
    scores = model.apply(params, hist_ExL, cands)
    idx = jax.lax.top_k(scores, min(k, n_cand))[1]
    topk = jnp.take_along_axis(cands, idx, axis=1)
    covered = jnp.any(cands == target_E[:, None], axis=1)
    return topk.astype(jnp.int32), covered

  data = NamedSharding(mesh, P("data"))
  rank = jax.jit(rank, in_shardings=(sharding.replicated(mesh), data, data),
                 out_shardings=(data, data))

  def run(params, history_UxL, target_U):
    """(top-k item ids [U, k], metrics dict with coverage) for every row."""
    n = len(target_U)
    pad = -n % batch
    hist = np.concatenate([history_UxL, np.zeros((pad, history_UxL.shape[1]), np.int32)])
    tgt = np.concatenate([target_U, np.zeros(pad, np.int32)])
    tops, covs = [], []
    for lo in range(0, len(tgt), batch):
      t, c = rank(params, hist[lo:lo + batch], tgt[lo:lo + batch])
      tops.append(t)
      covs.append(c)
    topk = np.concatenate(jax.device_get(tops))[:n]
    covered = np.concatenate(jax.device_get(covs))[:n]
    m = metrics_lib.from_topk(topk, target_U) if k >= max(metrics_lib.KS) else {}
    return topk, dict(m, coverage=float(covered.mean()))

  return run
