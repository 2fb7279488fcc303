"""Stage II model: an encoder-decoder Transformer over item unicodes, plus the IKD token.

Vocabulary (one table for encoder and decoder): ``PAD = 0``, ``BOS = 1``, ``IKD = 2`` and one token
per (level, code): ``token(l, c) = 3 + l * K + c`` for levels ``l = 0..L-1`` and codes ``0..K-1``.
``token_table(codes, k)`` turns the codes stage's ``codes.npy`` ([N + 1, L], row 0 = padding) into
those ids, with row 0 = PAD, so histories of item ids map to tokens by one gather.

Encoder input (``history_tokens``): ``per_code`` puts every code of every history item in the
sequence (H * L tokens); ``per_item`` sums an item's L code embeddings into one token (H tokens).
``num_item_ids > 0`` (config ``generate.history_item_ids``; not in the paper) also adds a learned
per-item embedding to each history item's token(s): items that share codes stay distinguishable
to the encoder, at the cost of an [N + 1, W] table. Targets are still generated as codes.
Positions count from the most recent item backwards, so left padding never moves the real tokens;
padded positions are masked out of every attention, so the output does not depend on them.

Decoder input: ``<BOS> c_1 .. c_L`` (teacher forcing; position ``l`` predicts ``c_{l+1}`` over the
K codes of level ``l + 1`` through a per-level output head), with the learnable IKD token appended
when ``ikd_dim > 0``; causal attention keeps the code logits blind to it, and its last-layer output,
projected to ``ikd_dim`` (the Stage I width), is what eq. 7 contrasts.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PAD, BOS, IKD = 0, 1, 2
NUM_SPECIAL = 3


def token_table(codes, k):
  """Code table [N + 1, L] (row 0 = padding, any value) -> token ids [N + 1, L], row 0 = PAD."""
  codes = np.asarray(codes, np.int64)
  levels = np.arange(codes.shape[1])
  tok = NUM_SPECIAL + levels[None, :] * k + codes
  tok[0] = PAD
  return tok.astype(np.int32)


def vocab_size(num_levels, k):
  return NUM_SPECIAL + num_levels * k


class Mlp(nn.Module):
  mlp_width: int
  dropout: float

  @nn.compact
  def __call__(self, x, train):
    h = nn.gelu(nn.Dense(self.mlp_width)(x))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return nn.Dense(x.shape[-1])(h)


class EncoderLayer(nn.Module):
  num_heads: int
  mlp_width: int
  dropout: float

  @nn.compact
  def __call__(self, x_BxTxW, mask_Bx1xTxT, train):
    h = nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout)(
        nn.LayerNorm()(x_BxTxW), mask=mask_Bx1xTxT, deterministic=not train)
    x_BxTxW = x_BxTxW + nn.Dropout(self.dropout)(h, deterministic=not train)
    h = Mlp(self.mlp_width, self.dropout)(nn.LayerNorm()(x_BxTxW), train)
    return x_BxTxW + nn.Dropout(self.dropout)(h, deterministic=not train)


class DecoderLayer(nn.Module):
  num_heads: int
  mlp_width: int
  dropout: float

  @nn.compact
  def __call__(self, y_BxSxW, mem_BxTxW, cross_Bx1xSxT, train, group=1):
    """``group > 1``: rows ``g * i .. g * i + g - 1`` of ``y`` (e.g. the beams of user ``i``) share
    memory row ``i``; their queries attend to it together, so its keys/values are projected once."""
    s = y_BxSxW.shape[1]
    causal = jnp.tril(jnp.ones((s, s), bool))[None, None]
    drop = nn.Dropout(self.dropout)
    h = nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout, name="self")(
        nn.LayerNorm()(y_BxSxW), mask=causal, deterministic=not train)
    y_BxSxW = y_BxSxW + drop(h, deterministic=not train)
    q = nn.LayerNorm()(y_BxSxW)
    if group > 1:
      q = q.reshape(-1, group * s, q.shape[-1])  # [B, group * S, W]: attention rows independent
    h = nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout, name="cross")(
        q, mem_BxTxW, mask=cross_Bx1xSxT, deterministic=not train).reshape(y_BxSxW.shape)
    y_BxSxW = y_BxSxW + drop(h, deterministic=not train)
    h = Mlp(self.mlp_width, self.dropout)(nn.LayerNorm()(y_BxSxW), train)
    return y_BxSxW + drop(h, deterministic=not train)


class Seq2Seq(nn.Module):
  num_levels: int  # L, code length
  k: int  # codes per level
  max_history: int
  width: int = 128
  num_heads: int = 4
  mlp_width: int = 512
  num_encoder_layers: int = 1
  num_decoder_layers: int = 4
  dropout: float = 0.1
  history_tokens: str = "per_code"
  ikd_dim: int = 0  # 0: no IKD token / head
  num_item_ids: int = 0  # 0: history items are their codes only; else rows of the item-id table

  def setup(self):
    if self.history_tokens not in ("per_code", "per_item"):
      raise ValueError(f"generate.history_tokens must be 'per_code' or 'per_item', "
                       f"got {self.history_tokens!r}")
    init = nn.initializers.normal(0.02)
    self.embed = nn.Embed(vocab_size(self.num_levels, self.k), self.width, embedding_init=init)
    enc_len = self.max_history * (self.num_levels if self.history_tokens == "per_code" else 1)
    self.enc_pos = nn.Embed(enc_len, self.width, embedding_init=init)
    self.dec_pos = nn.Embed(self.num_levels + 2, self.width, embedding_init=init)
    self.enc_layers = [EncoderLayer(self.num_heads, self.mlp_width, self.dropout)
                       for _ in range(self.num_encoder_layers)]
    self.dec_layers = [DecoderLayer(self.num_heads, self.mlp_width, self.dropout)
                       for _ in range(self.num_decoder_layers)]
    self.enc_norm, self.dec_norm = nn.LayerNorm(), nn.LayerNorm()
    self.drop = nn.Dropout(self.dropout)
    self.head_w = self.param("head_w", nn.initializers.lecun_normal(batch_axis=(0,)),
                             (self.num_levels, self.width, self.k))
    self.head_b = self.param("head_b", nn.initializers.zeros, (self.num_levels, self.k))
    if self.ikd_dim:
      self.ikd_proj = nn.Dense(self.ikd_dim)
    if self.num_item_ids:
      self.item_embed = nn.Embed(self.num_item_ids, self.width, embedding_init=init)

  def encode(self, hist_BxH, tokens_NxL, train=False):
    """History item ids [B, H] (0 = padding) -> memory [B, T, W] and its key mask [B, T]."""
    tok_BxHxL = tokens_NxL[hist_BxH]
    mask_BxH = hist_BxH > 0
    if self.history_tokens == "per_code":
      b, h, l = tok_BxHxL.shape
      tok_BxT = tok_BxHxL.reshape(b, h * l)
      mask_BxT = jnp.repeat(mask_BxH, l, axis=1)
      x_BxTxW = self.embed(tok_BxT)
    else:
      mask_BxT = mask_BxH
      x_BxTxW = self.embed(tok_BxHxL).sum(axis=2)
    if self.num_item_ids:  # an item's id vector on each of its tokens (L per_code, 1 per_item)
      ids_BxHxW = self.item_embed(hist_BxH)
      x_BxTxW = x_BxTxW + jnp.repeat(ids_BxHxW, x_BxTxW.shape[1] // hist_BxH.shape[1], axis=1)
    t = x_BxTxW.shape[1]
    if t > self.enc_pos.num_embeddings:
      raise ValueError(f"history of {hist_BxH.shape[1]} items exceeds max_history "
                       f"{self.max_history}")
    pos_T = jnp.arange(t - 1, -1, -1)  # distance from the end: left padding shifts nothing
    x_BxTxW = self.drop(x_BxTxW + self.enc_pos(pos_T)[None], deterministic=not train)
    att_mask = mask_BxT[:, None, None, :]
    for layer in self.enc_layers:
      x_BxTxW = layer(x_BxTxW, att_mask, train)
    return self.enc_norm(x_BxTxW), mask_BxT

  def decode_embedded(self, mem_BxTxW, mem_mask_BxT, y_BxSxW, train=False, group=1):
    """Decoder stack on input embeddings [B * group, S, W] (positions added here) -> hidden of the
    same shape; ``group`` consecutive rows share one memory row (see DecoderLayer)."""
    s = y_BxSxW.shape[1]
    y_BxSxW = self.drop(y_BxSxW + self.dec_pos(jnp.arange(s))[None], deterministic=not train)
    cross = mem_mask_BxT[:, None, None, :]
    for layer in self.dec_layers:
      y_BxSxW = layer(y_BxSxW, mem_BxTxW, cross, train, group)
    return self.dec_norm(y_BxSxW)

  def level_logits(self, h_BxW, level):
    """Logits over the K codes of ``level`` (static int) from a decoder hidden state."""
    return h_BxW @ self.head_w[level] + self.head_b[level]

  def decode(self, mem_BxTxW, mem_mask_BxT, dec_tok_BxS, train=False, group=1):
    return self.decode_embedded(mem_BxTxW, mem_mask_BxT, self.embed(dec_tok_BxS), train, group)

  def __call__(self, hist_BxH, target_tok_BxL, tokens_NxL, train=False):
    """Teacher forcing: code logits [B, L, K] and the IKD vector [B, ikd_dim] (None without)."""
    mem, mask = self.encode(hist_BxH, tokens_NxL, train)
    b = hist_BxH.shape[0]
    parts = [jnp.full((b, 1), BOS, jnp.int32), target_tok_BxL]
    if self.ikd_dim:
      parts.append(jnp.full((b, 1), IKD, jnp.int32))
    h_BxSxW = self.decode(mem, mask, jnp.concatenate(parts, axis=1), train)
    logits_BxLxK = (jnp.einsum("blw,lwk->blk", h_BxSxW[:, :self.num_levels], self.head_w)
                    + self.head_b[None])
    ikd: Optional[jax.Array] = None
    if self.ikd_dim:
      ikd = self.ikd_proj(h_BxSxW[:, -1])
    return logits_BxLxK, ikd


def build(config, num_levels, k, ikd_dim, num_items=0):
  """The configured model; ``ikd_dim`` is the Stage I width (ignored when generate.ikd is off),
  ``num_items`` the catalog size (needed by generate.history_item_ids)."""
  g, m = config.generate, config.generate.model
  if g.history_item_ids and num_items <= 0:
    raise ValueError("generate.history_item_ids needs the catalog size: pass num_items to build")
  return Seq2Seq(num_levels=num_levels, k=k, max_history=config.data.max_history, width=m.width,
                 num_heads=m.num_heads, mlp_width=m.mlp_width,
                 num_encoder_layers=m.num_encoder_layers, num_decoder_layers=m.num_decoder_layers,
                 dropout=m.dropout, history_tokens=g.history_tokens,
                 ikd_dim=int(ikd_dim) if g.ikd else 0,
                 num_item_ids=num_items + 1 if g.history_item_ids else 0)


def init_params(model, seed, tokens_NxL):
  hist = jnp.ones((2, model.max_history), jnp.int32)
  tgt = jnp.asarray(tokens_NxL[1:2]).repeat(2, 0)
  return model.init(jax.random.key(seed), hist, tgt, jnp.asarray(tokens_NxL))
