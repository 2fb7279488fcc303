"""DIN (Zhou et al. 2018): target attention over the history and a pairwise (user, item) scorer.

The local activation unit reads ``[h, e, h - e, h * e]`` for a history item ``h`` and a candidate
``e``. Its first layer is linear, so ``W [h, e, h - e, h * e] = A h + B e + C (h * e)``: we hold
``A``, ``B`` and ``C`` directly (the same function class), which lets ``A h`` and ``B e`` be
computed once per history item and once per candidate instead of once per pair.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  features: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      x = nn.PReLU(name=f"act{i}")(nn.Dense(f, name=f"dense{i}")(x))
    return x


class DIN(nn.Module):
  num_items: int
  width: int = 128
  attention_mlp: Sequence[int] = (80, 40)
  mlp: Sequence[int] = (200, 80)
  attention_softmax: bool = False  # DIN keeps raw (unnormalised) attention weights

  def setup(self):
    self.items = nn.Embed(self.num_items + 1, self.width,
                          embedding_init=nn.initializers.normal(0.1), name="items")
    a0 = self.attention_mlp[0]
    self.att_hist = nn.Dense(a0, name="att_hist")
    self.att_cand = nn.Dense(a0, use_bias=False, name="att_cand")
    self.att_prod = nn.Dense(a0, use_bias=False, name="att_prod")
    self.att_act = nn.PReLU(name="att_act")
    self.att_rest = MLP(tuple(self.attention_mlp[1:]), name="att_mlp")
    self.att_out = nn.Dense(1, name="att_out")
    self.head = MLP(tuple(self.mlp), name="head")
    self.head_out = nn.Dense(1, name="head_out")

  def table(self):
    """The item-id embedding table E_col [num_items + 1, width] (row 0 = padding)."""
    return self.items.embedding

  def attention(self, history_BxL, cand_BxCxD):
    """Attention weights [B, C, L] of every history slot for every candidate; padding gets 0."""
    h_BxLxD = self.items(history_BxL)
    pre = (self.att_hist(h_BxLxD)[:, None] + self.att_cand(cand_BxCxD)[:, :, None]
           + self.att_prod(h_BxLxD[:, None] * cand_BxCxD[:, :, None]))
    logits_BxCxL = self.att_out(self.att_rest(self.att_act(pre)))[..., 0]
    mask = (history_BxL > 0)[:, None, :]
    if self.attention_softmax:
      return jax.nn.softmax(jnp.where(mask, logits_BxCxL, -1e9), axis=-1) * mask
    return jnp.where(mask, logits_BxCxL, 0.0)

  def __call__(self, history_BxL, candidates_BxC):
    """Scores [B, C] of each candidate item id for each user history (left-padded with 0).

    score = MLP([v, e, v * e]) + <v, e>, with v the attention-pooled interest for candidate e.
    The dot term is the sum of the ``v * e`` features the MLP already reads, made explicit so the
    embedding space also supports the dot-product retrieval that builds full-ranking shortlists.
    """
    e_BxCxD = self.items(candidates_BxC)
    w_BxCxL = self.attention(history_BxL, e_BxCxD)
    v_BxCxD = jnp.einsum("bcl,bld->bcd", w_BxCxL, self.items(history_BxL))
    x = jnp.concatenate([v_BxCxD, e_BxCxD, v_BxCxD * e_BxCxD], axis=-1)
    return self.head_out(self.head(x))[..., 0] + jnp.sum(v_BxCxD * e_BxCxD, -1)

  def query(self, history_BxL):
    """Attention-free interest (mean of the history embeddings) for shortlist retrieval."""
    mask = (history_BxL > 0)[..., None]
    h = self.items(history_BxL) * mask
    return h.sum(1) / jnp.maximum(mask.sum(1), 1)


def next_item_loss(scores_BxC, valid_BxC, weight_B):
  """Eq. 4: softmax cross-entropy of the target (column 0) against the negatives.

  ``valid_BxC`` masks negatives that collide with the target; ``weight_B`` masks padded rows.
  """
  logits = jnp.where(valid_BxC, scores_BxC, -1e9)
  nll = -jax.nn.log_softmax(logits, axis=-1)[:, 0]
  return jnp.sum(nll * weight_B) / jnp.maximum(weight_B.sum(), 1.0)
