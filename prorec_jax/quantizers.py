"""Baseline quantisers for the codes stage: random codes, residual k-means and RQ-VAE (TIGER).

Residual k-means and RQ-VAE give ``levels`` tokens per item that may collide; as in TIGER
(Rajput et al. 2023) one more token is appended to make every code unique: the item's rank, in
item-id order, among the items sharing its first ``levels`` tokens (0 when it shares with nobody).
Should more than ``k`` items share one code, the suffix takes as many base-``k`` digits as needed.
All tokens lie in 0..k-1.
"""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from prorec_jax import kmeans as kmeans_lib


def min_depth(n, k):
  """Smallest ``L`` with ``k ** L >= n`` (at least 1)."""
  depth = 1
  while k ** depth < n:
    depth += 1
  return depth


def _digits(values, k, depth):
  """Base-``k`` digits of ``values``, most significant first, as int32 [len(values), depth]."""
  out = np.zeros((len(values), depth), np.int32)
  rest = np.asarray(values, np.int64).copy()
  for l in range(depth - 1, -1, -1):
    out[:, l] = rest % k
    rest //= k
  return out


def random_codes(n, k, seed):
  """Distinct uniformly random codes of the shortest length that fits ``n`` items."""
  t0 = time.time()
  depth = min_depth(n, k)
  ids = np.random.default_rng(seed).choice(k ** depth, size=n, replace=False)
  return _digits(ids, k, depth), dict(depth=depth, collisions=0, seconds=time.time() - t0)


def add_collision_suffix(codes_NxL, k):
  """Appends TIGER's disambiguation token(s); returns (codes, stats of the collisions)."""
  _, inv, counts = np.unique(codes_NxL, axis=0, return_inverse=True, return_counts=True)
  inv = inv.reshape(-1)
  order = np.argsort(inv, kind="stable")
  starts = np.cumsum(counts) - counts
  rank = np.empty(len(inv), np.int64)
  rank[order] = np.arange(len(inv)) - starts[inv[order]]
  digits = min_depth(int(counts.max()), k)
  stats = dict(collisions=int(len(inv) - len(counts)),
               colliding_items=int(counts[counts > 1].sum()),
               max_items_per_code=int(counts.max()), suffix_tokens=digits)
  return np.concatenate([codes_NxL.astype(np.int32), _digits(rank, k, digits)], axis=1), stats


def residual_kmeans(x_NxD, k, levels, seed, iters=50, tol=1e-4, init="kmeans++"):
  """Each level k-means the residual the previous levels left, then the collision suffix."""
  t0 = time.time()
  key = jax.random.key(seed)
  r_NxD = jnp.asarray(x_NxD, jnp.float32)
  tokens, inertia = [], []
  for l in range(levels):
    res = kmeans_lib.kmeans(jax.random.fold_in(key, l), r_NxD, k, iters=iters, tol=tol, init=init)
    tokens.append(np.asarray(res.labels))
    inertia.append(float(res.inertia))
    r_NxD = r_NxD - res.centroids[res.labels]
  codes, info = add_collision_suffix(np.stack(tokens, axis=1), k)
  logging.info("codes: rkmeans residual inertia per level %s; %d collisions", inertia,
               info["collisions"])
  return codes, dict(info, depth=codes.shape[1], residual_inertia=inertia,
                     seconds=time.time() - t0)


class RQVAE(nn.Module):
  """MLP autoencoder with a residual quantiser of ``levels`` codebooks of ``k`` vectors."""
  dim: int
  latent_dim: int
  hidden: tuple
  levels: int
  k: int

  def setup(self):
    self.enc = [nn.Dense(h) for h in self.hidden] + [nn.Dense(self.latent_dim)]
    self.dec = [nn.Dense(h) for h in reversed(self.hidden)] + [nn.Dense(self.dim)]
    self.codebooks = self.param("codebooks", nn.initializers.normal(1.0),
                                (self.levels, self.k, self.latent_dim))

  @staticmethod
  def _mlp(layers, h):
    for layer in layers[:-1]:
      h = nn.relu(layer(h))
    return layers[-1](h)

  def encode(self, x_BxD):
    return self._mlp(self.enc, x_BxD)

  def quantize(self, z_BxZ, beta):
    """Tokens [B, levels], the quantised latent and the codebook + commitment loss."""
    r_BxZ, q_BxZ, loss, tokens = z_BxZ, jnp.zeros_like(z_BxZ), 0.0, []
    for l in range(self.levels):
      c_KxZ = self.codebooks[l]
      d_BxK = (jnp.sum(r_BxZ ** 2, -1, keepdims=True) - 2 * r_BxZ @ c_KxZ.T
               + jnp.sum(c_KxZ ** 2, -1)[None])
      t_B = jnp.argmin(d_BxK, axis=-1)
      e_BxZ = c_KxZ[t_B]
      sg = jax.lax.stop_gradient
      loss += jnp.mean(jnp.sum((sg(r_BxZ) - e_BxZ) ** 2, -1))
      loss += beta * jnp.mean(jnp.sum((r_BxZ - sg(e_BxZ)) ** 2, -1))
      tokens.append(t_B)
      q_BxZ, r_BxZ = q_BxZ + e_BxZ, r_BxZ - e_BxZ
    return jnp.stack(tokens, axis=-1), q_BxZ, loss

  def __call__(self, x_BxD, beta):
    z_BxZ = self.encode(x_BxD)
    _, q_BxZ, rq_loss = self.quantize(z_BxZ, beta)
    z_BxZ = z_BxZ + jax.lax.stop_gradient(q_BxZ - z_BxZ)  # straight-through estimator
    recon = jnp.mean(jnp.sum((self._mlp(self.dec, z_BxZ) - x_BxD) ** 2, -1))
    return recon + rq_loss, (recon, rq_loss)


def _kmeans_codebooks(model, params, x_NxD, key):
  """TIGER's init: each codebook is the k-means of the residuals the earlier levels leave."""
  r = model.apply(params, x_NxD, method=RQVAE.encode)
  books = []
  for l in range(model.levels):
    res = kmeans_lib.kmeans(jax.random.fold_in(key, l), r, model.k, iters=20)
    books.append(res.centroids)
    r = r - res.centroids[res.labels]
  params = jax.tree.map(lambda a: a, params)
  params["params"]["codebooks"] = jnp.stack(books)
  return params


def rqvae(x_NxD, k, levels, seed, latent_dim=32, hidden=(256, 128), epochs=100, batch_size=1024,
          lr=1e-3, beta=0.25):
  """Trains an RQ-VAE on the item embeddings; codes = its tokens + the collision suffix."""
  t0 = time.time()
  x_NxD = jnp.asarray(x_NxD, jnp.float32)
  n = x_NxD.shape[0]
  bs = min(batch_size, n)
  steps = n // bs
  model = RQVAE(x_NxD.shape[1], latent_dim, tuple(hidden), levels, k)
  k_init, k_book, k_data = jax.random.split(jax.random.key(seed), 3)
  # Jitted, unoptimised: eager init compiles every random op on its own (seconds on CPU), and
  # optimising a program that runs once does not pay.
  params = jax.jit(model.init, static_argnums=2,
                   compiler_options=kmeans_lib.compile_options(0))(k_init, x_NxD[:2], beta)
  params = _kmeans_codebooks(model, params, x_NxD, k_book)
  tx = optax.adam(lr)

  def loss_fn(p, xb):
    return model.apply(p, xb, beta)

  def train(params):
    def epoch(e, carry):
      params, opt, _ = carry
      perm = jax.random.permutation(jax.random.fold_in(k_data, e), n)[:steps * bs]

      def step(c, idx):
        p, o = c
        (loss, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x_NxD[idx])
        upd, o = tx.update(g, o, p)
        return (optax.apply_updates(p, upd), o), jnp.stack(parts)
      (params, opt), parts = jax.lax.scan(step, (params, opt), perm.reshape(steps, bs))
      return params, opt, parts.mean(0)
    return jax.lax.fori_loop(0, epochs, epoch, (params, tx.init(params), jnp.zeros(2)))

  # Small problems: XLA:CPU would spend longer optimising the program than running it.
  work = 6 * epochs * n * sum(a.size for a in jax.tree.leaves(params))
  params, _, last = jax.jit(train, compiler_options=kmeans_lib.compile_options(work))(params)
  z = model.apply(params, x_NxD, method=RQVAE.encode)
  tokens, _, _ = model.apply(params, z, beta, method=RQVAE.quantize)
  codes, info = add_collision_suffix(np.asarray(tokens), k)
  used = [int(len(np.unique(np.asarray(tokens)[:, l]))) for l in range(levels)]
  logging.info("codes: rqvae recon %.4f rq %.4f after %d epochs; codewords used per level %s; "
               "%d collisions", float(last[0]), float(last[1]), epochs, used, info["collisions"])
  return codes, dict(info, depth=codes.shape[1], recon_loss=float(last[0]),
                     rq_loss=float(last[1]), codewords_used=used, seconds=time.time() - t0)
