"""Where a recommender wins or loses against the first-order Markov chain, split by test pair type.

Every held-out pair (last history item ``x``, target ``y``) falls in one bucket, judged on the
training part (every user's sequence without its last two items: what Stage II trains on and
what the ``markov_train`` baseline counts):

- ``seen_transition``: some user went from ``x`` to ``y``: Markov can answer by memory;
- ``seen_target``: ``y`` was seen, never right after ``x``: the answer must generalise;
- ``cold_target``: ``y`` never appears: only content (the codes) can point to it.

Per bucket: its share of users and each model's Recall/NDCG@k; overall, how often two models hit
the same users. A share-weighted average of a model's bucket recalls is its overall recall.

``memory_first`` is the simplest way to use both (not in the paper): the ``cap`` most frequent
successors (in the training part) of the user's last item, then the model's list without them.
"""
import numpy as np

from prorec_jax import baselines
from prorec_jax import metrics

BUCKETS = ("seen_transition", "seen_target", "cold_target")


def _training_counts(sequences, num_items):
  parts = [s[:-2] for s in sequences]
  return baselines.transitions(parts, num_items), baselines.popularity_counts(parts, num_items)


def buckets(sequences, num_items, holdout=1):
  """Bucket index (into BUCKETS) of each user's held-out pair; holdout 2 = validation, 1 = test."""
  trans, pop = _training_counts(sequences, num_items)
  out = np.empty(len(sequences), np.int32)
  for u, s in enumerate(sequences):
    x, y = s[len(s) - holdout - 1], s[len(s) - holdout]
    out[u] = 0 if trans[x, y] > 0 else (1 if pop[y] > 0 else 2)
  return out


def breakdown(topk_by_model, targets, bucket_of, ks=(10, 20)):
  """``{bucket: {"share", "users", model: metrics}}`` plus ``"all"`` for every user."""
  targets = np.asarray(targets)
  out = {}
  for b, name in [(None, "all")] + list(enumerate(BUCKETS)):
    rows = np.arange(len(targets)) if b is None else np.flatnonzero(bucket_of == b)
    entry = dict(users=int(len(rows)), share=float(len(rows) / len(targets)))
    if len(rows):
      for model, topk in topk_by_model.items():
        entry[model] = metrics.from_topk(np.asarray(topk)[rows], targets[rows], ks)
    out[name] = entry
  return out


def overlap(topk_a, topk_b, targets, k=10):
  """Share of users hit @k by both, by only a, by only b, and by either."""
  a = (metrics.target_rank(np.asarray(topk_a)[:, :k], targets) < k)
  b = (metrics.target_rank(np.asarray(topk_b)[:, :k], targets) < k)
  return dict(both=float((a & b).mean()), only_a=float((a & ~b).mean()),
              only_b=float((~a & b).mean()), either=float((a | b).mean()))


def memory_first(topk_UxK, sequences, num_items, holdout, cap):
  """Each user's top ``cap`` training-part successors of the last history item (the head of the
  ``markov_train`` list, only items that ever followed it), then ``topk_UxK``'s items minus those;
  same shape as ``topk_UxK``."""
  topk_UxK = np.asarray(topk_UxK)
  if cap <= 0:
    return topk_UxK.copy()
  trans, _ = _training_counts(sequences, num_items)
  markov = baselines.recommend(sequences, num_items, holdout, "markov", cap, fit_holdout=2)
  out = np.empty_like(topk_UxK)
  for u, s in enumerate(sequences):
    x = s[len(s) - holdout - 1]
    succ = markov[u, :min(cap, trans.indptr[x + 1] - trans.indptr[x])]
    out[u] = np.concatenate([succ, topk_UxK[u][~np.isin(topk_UxK[u], succ)]])[:topk_UxK.shape[1]]
  return out
