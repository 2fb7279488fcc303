"""DIN (Zhou et al. 2018) for next-item prediction: target attention over the history.

For a history item ``h_j`` and a candidate ``e``, the local activation unit reads
``[h', e', h' - e', h' * e']`` (``x' = P x``, a learned projection to ``attention_dim``) and gives a
raw, unnormalised attention weight ``a_j(e)``; padded slots get 0. The score is the attention-pooled
interest, mapped by ``W``, dotted with the candidate:
``s(u, e) = <W sum_j a_j(e) h_j, e> = sum_j a_j(e) <W h_j, e>``. ``W`` lets "followed by" differ from
"similar to"; a learned recency term per history position enters the attention, since DIN itself
has no notion of order and the latest items predict the next one best.

Why not DIN's CTR head (an MLP on [interest, candidate]) and why the projection: next-item
recommendation ranks the whole catalog, so every (user, item) pair needs a score. The unit's first
layer is linear, ``W [h', e', h'-e', h'*e'] = A h' + B e' + C (h' * e')``, so we hold A, B, C
directly (the same function class) and contract ``C (h' * e')`` as a batched matmul; with a small
``attention_dim`` exact full-catalog scores cost ~L * N * attention_dim^2 per user, which a CPU can
afford, while an MLP head over 12k items per user could not. Candidates are shared by the rows of a
batch (all items for ranking, in-batch targets + sampled negatives for training).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class DIN(nn.Module):
  num_items: int
  width: int = 128
  attention_dim: int = 16
  attention_mlp: Sequence[int] = (16,)
  attention_softmax: bool = False  # DIN keeps raw (unnormalised) attention weights
  max_history: int = 20

  def setup(self):
    self.items = nn.Embed(self.num_items + 1, self.width,
                          embedding_init=nn.initializers.normal(0.1), name="items")
    self.proj = nn.Dense(self.attention_dim, use_bias=False, name="att_proj")
    a0 = self.attention_mlp[0]
    self.att_hist = nn.Dense(a0, name="att_hist")
    self.att_cand = nn.Dense(a0, use_bias=False, name="att_cand")
    self.att_prod = self.param("att_prod", nn.initializers.lecun_normal(),
                               (self.attention_dim, a0))
    self.att_act = nn.PReLU(name="att_act0")
    self.att_rest = [nn.Dense(f, name=f"att_dense{i + 1}")
                     for i, f in enumerate(self.attention_mlp[1:])]
    self.att_rest_act = [nn.PReLU(name=f"att_act{i + 1}")
                         for i in range(len(self.attention_mlp) - 1)]
    self.att_out = nn.Dense(1, name="att_out")
    # Recency: DIN has no notion of order, but the most recent items predict the next one best.
    self.att_pos = self.param("att_pos", nn.initializers.zeros, (self.max_history, a0))
    self.out = nn.Dense(self.width, use_bias=False, name="interest_out")

  def table(self):
    """The item-id embedding table E_col [num_items + 1, width] (row 0 = padding)."""
    return self.items.embedding

  def attention(self, history_ExL, cand_C):
    """Attention weights [E, C, L] of every history slot for every shared candidate."""
    h_ExLxD = self.items(history_ExL)
    hp, cp = self.proj(h_ExLxD), self.proj(self.items(cand_C))
    pos = self.att_pos[-history_ExL.shape[1]:]  # left padding: the last column is the most recent
    pre = (jnp.einsum("eld,da,cd->ecla", hp, self.att_prod, cp)
           + (self.att_hist(hp) + pos)[:, None] + self.att_cand(cp)[None, :, None])
    x = self.att_act(pre)
    for dense, act in zip(self.att_rest, self.att_rest_act):
      x = act(dense(x))
    logits_ExCxL = self.att_out(x)[..., 0]
    mask = (history_ExL > 0)[:, None, :]
    if self.attention_softmax:
      return jax.nn.softmax(jnp.where(mask, logits_ExCxL, -1e9), axis=-1) * mask
    return jnp.where(mask, logits_ExCxL, 0.0)

  def __call__(self, history_ExL, cand_C):
    """Scores [E, C] of the shared candidate item ids for each (left-padded) history."""
    w_ExCxL = self.attention(history_ExL, cand_C)
    dots_ExCxL = jnp.einsum("eld,cd->ecl", self.out(self.items(history_ExL)), self.items(cand_C))
    return jnp.sum(w_ExCxL * dots_ExCxL, axis=-1)


def next_item_loss(scores_BxC, target_B, cand_C, weight_B):
  """Eq. 4 with shared candidates: row b's positive is column b (its own target, the first B
  columns being the batch's targets); the other columns are its negatives, except columns holding
  the same item and the columns of padded rows."""
  b = scores_BxC.shape[0]
  col = jnp.arange(cand_C.shape[0])
  own = col[None, :] == jnp.arange(b)[:, None]
  col_live = jnp.concatenate([weight_B > 0, jnp.ones(cand_C.shape[0] - b, bool)])
  valid = own | ((cand_C[None, :] != target_B[:, None]) & col_live[None, :])
  logits = jnp.where(valid, scores_BxC, -1e9)
  nll = -jnp.sum(jax.nn.log_softmax(logits, axis=-1) * own, axis=-1)
  return jnp.sum(nll * weight_B) / jnp.maximum(weight_B.sum(), 1.0)
