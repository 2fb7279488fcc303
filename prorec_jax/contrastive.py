"""InfoNCE with cosine similarity, shared by Stage I (CKA, eq. 3) and Stage II (IKD, eq. 7)."""
import jax
import jax.numpy as jnp


def l2_normalize(x, eps=1e-8):
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def info_nce(a_BxD, b_BxD, ids_B, weight_B, tau):
  """Symmetric InfoNCE: row i of ``a`` should match row i of ``b`` against the other rows.

  Rows with the same id as row i are not negatives for it (an item twice in a batch is not its own
  negative), and rows with weight 0 (batch padding) take part in nothing.
  """
  sim_BxB = l2_normalize(a_BxD) @ l2_normalize(b_BxD).T / tau
  same = ids_B[:, None] == ids_B[None, :]
  eye = jnp.eye(len(ids_B), dtype=bool)
  live = (weight_B > 0)
  allowed = (~same | eye) & live[None, :] & live[:, None]
  logits = jnp.where(allowed, sim_BxB, -1e9)
  a_to_b = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  b_to_a = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
  per_row = 0.5 * (a_to_b + b_to_a)
  return jnp.sum(per_row * weight_B) / jnp.maximum(weight_B.sum(), 1.0)
