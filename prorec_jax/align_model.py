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
  attention_mlp: tuple
  mlp: tuple
  attention_softmax: bool = False
  mal: str = "adaln"
  align: bool = True

  def setup(self):
    self.din = din_lib.DIN(self.num_items, self.width, self.attention_mlp, self.mlp,
                           self.attention_softmax, name="din")
    if self.align:
      self.mal_layer = adaln.MAL(self.width, self.mal, name="mal")

  def __call__(self, history_BxL, candidates_BxC):
    return self.din(history_BxL, candidates_BxC)

  def query(self, history_BxL):
    return self.din.query(history_BxL)

  def table(self):
    return self.din.table()

  def mapped(self, semantic_NxS):
    return self.mal_layer(semantic_NxS)

  def losses(self, batch, negatives_BxM, semantic_table, tau):
    """(L_next, L_cka) for a batch; L_cka is 0 when the model does not align."""
    target_B, weight_B = batch["target"], batch["weight"]
    cands = jnp.concatenate([target_B[:, None], negatives_BxM], axis=1)
    valid = jnp.concatenate([jnp.ones_like(target_B[:, None], bool),
                             negatives_BxM != target_B[:, None]], axis=1)
    l_next = din_lib.next_item_loss(self.din(batch["history"], cands), valid, weight_B)
    if not self.align:
      return l_next, jnp.zeros(())
    z_col = self.din.table()[target_B]
    z_sem = self.mal_layer(semantic_table[target_B])
    return l_next, contrastive.info_nce(z_col, z_sem, target_B, weight_B, tau)
