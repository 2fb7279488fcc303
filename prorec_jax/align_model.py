"""Stage I model: DIN plus (for fusion=prorec) the modality adaption layer, and its two losses."""
import flax.linen as nn
import jax.numpy as jnp

from prorec_jax import adaln
from prorec_jax import contrastive
from prorec_jax import din as din_lib

FUSIONS = ("prorec", "concat", "semantic_only", "collab_only")


def uses_alignment(fusion):
  """Only PRORec trains the MAL + CKA; concat and collab_only train a plain DIN."""
  if fusion not in FUSIONS:
    raise ValueError(f"align.fusion must be one of {FUSIONS}, got {fusion!r}")
  return fusion == "prorec"


class AlignModel(nn.Module):
  num_items: int
  width: int
  attention_dim: int
  attention_mlp: tuple
  attention_softmax: bool = False
  max_history: int = 20
  mal: str = "adaln"
  align: bool = True

  def setup(self):
    self.din = din_lib.DIN(self.num_items, self.width, self.attention_dim, self.attention_mlp,
                           self.attention_softmax, self.max_history, name="din")
    if self.align:
      self.mal_layer = adaln.MAL(self.width, self.mal, name="mal")

  def __call__(self, history_ExL, cand_C):
    return self.din(history_ExL, cand_C)

  def table(self):
    return self.din.table()

  def mapped(self, semantic_NxS):
    return self.mal_layer(semantic_NxS)

  def losses(self, batch, negatives_M, semantic_table, tau, group=0):
    """(L_next, L_cka) for a batch; L_cka is 0 when the model does not align.

    The batch is cut into groups of ``group`` rows (0 = one group); a row's candidates are its
    group's targets (in-batch negatives) followed by ``negatives_M`` sampled items. Groups bound
    the [rows, candidates, history, width] attention tensor, the cost of a step.
    """
    target_B, weight_B = batch["target"], batch["weight"]
    b = target_B.shape[0]
    group = b if group <= 0 or group >= b else group
    if b % group:
      raise ValueError(f"batch size {b} is not a multiple of align.in_batch_group {group}")
    nll_sum = 0.0
    for lo in range(0, b, group):
      t, w = target_B[lo:lo + group], weight_B[lo:lo + group]
      cand_C = jnp.concatenate([t, negatives_M])
      scores = self.din(batch["history"][lo:lo + group], cand_C)
      nll_sum += din_lib.next_item_loss(scores, t, cand_C, w) * jnp.maximum(w.sum(), 1.0)
    l_next = nll_sum / jnp.maximum(weight_B.sum(), 1.0)
    if not self.align:
      return l_next, jnp.zeros(())
    z_col = self.din.table()[target_B]
    z_sem = self.mal_layer(semantic_table[target_B])
    return l_next, contrastive.info_nce(z_col, z_sem, target_B, weight_B, tau)
