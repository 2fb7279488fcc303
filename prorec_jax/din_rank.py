"""Exact full-catalog ranking with DIN: every item is scored for every user.

Items are scanned in chunks inside one jitted call (a running top-k is merged chunk by chunk), so
memory stays bounded by ``users x chunk x history x attention width`` whatever the catalog size.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from prorec_jax import metrics as metrics_lib
from prorec_jax import sharding

_FLOAT_BUDGET = 1 << 23  # floats of the [users, chunk, history, width] tensor on one device


def make_ranker(model, num_items, max_history, attention_width, mesh, batch_users=64, k=20):
  """Returns ``run(params, history_UxL, target_U) -> (topk [U, k], metrics)``."""
  ndev = sharding.data_size(mesh)
  batch = -(-batch_users // ndev) * ndev
  chunk = int(np.clip(_FLOAT_BUDGET // ((batch // ndev) * max_history * attention_width),
                      min(128, num_items), num_items))
  n_chunks = -(-num_items // chunk)
  ids = np.arange(1, n_chunks * chunk + 1)
  ids_KxC = np.where(ids <= num_items, ids, 0).reshape(n_chunks, chunk).astype(np.int32)
  k = min(k, num_items)

  def rank(params, hist_ExL, ids_KxC):
    def merge(carry, ids_C):
      best_s, best_i = carry
      s = jnp.where(ids_C[None] > 0, model.apply(params, hist_ExL, ids_C), -jnp.inf)
      all_s = jnp.concatenate([best_s, s], axis=1)
      all_i = jnp.concatenate([best_i, jnp.broadcast_to(ids_C, s.shape)], axis=1)
      top_s, idx = jax.lax.top_k(all_s, k)
      return (top_s, jnp.take_along_axis(all_i, idx, axis=1)), None
    e = hist_ExL.shape[0]
    init = (jnp.full((e, k), -jnp.inf), jnp.zeros((e, k), jnp.int32))
    return jax.lax.scan(merge, init, ids_KxC)[0][1]

  data, repl = NamedSharding(mesh, P("data")), sharding.replicated(mesh)
  rank = jax.jit(rank, in_shardings=(repl, data, repl), out_shardings=data)
  ids_dev = jax.device_put(ids_KxC, repl)

  def run(params, history_UxL, target_U):
    n = len(target_U)
    hist = np.concatenate([history_UxL, np.zeros((-n % batch, history_UxL.shape[1]), np.int32)])
    tops = [rank(params, hist[lo:lo + batch], ids_dev) for lo in range(0, len(hist), batch)]
    topk = np.concatenate(jax.device_get(tops))[:n]
    m = metrics_lib.from_topk(topk, target_U) if k >= max(metrics_lib.KS) else {}
    return topk, m

  return run
