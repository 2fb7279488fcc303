"""AdaLN (Peebles & Xie 2023) and the modality adaption layer MAL.

``MAL(s) = LN(W s + b) * (1 + g(s)) + h(s)``: a linear map of the semantic embedding into the
collaborative space, normalised, then scaled and shifted by ``g`` and ``h`` regressed from the
input itself. ``g`` and ``h`` start at zero, so at initialisation MAL is exactly LN(W s + b).
"""
import flax.linen as nn

zeros = nn.initializers.zeros


class AdaLN(nn.Module):
  """LayerNorm without its own affine, modulated by scale/shift regressed from ``cond``."""
  features: int

  @nn.compact
  def __call__(self, x, cond):
    y = nn.LayerNorm(use_scale=False, use_bias=False, name="norm")(x)
    c = nn.silu(cond)
    scale = nn.Dense(self.features, kernel_init=zeros, bias_init=zeros, name="scale")(c)
    shift = nn.Dense(self.features, kernel_init=zeros, bias_init=zeros, name="shift")(c)
    return y * (1.0 + scale) + shift


class MAL(nn.Module):
  features: int
  kind: str = "adaln"  # "adaln" | "linear" (the ablation: a plain linear map)

  @nn.compact
  def __call__(self, s):
    x = nn.Dense(self.features, name="proj")(s)
    if self.kind == "linear":
      return x
    if self.kind != "adaln":
      raise ValueError(f"align.mal must be 'adaln' or 'linear', got {self.kind!r}")
    return AdaLN(self.features, name="adaln")(x, s)
