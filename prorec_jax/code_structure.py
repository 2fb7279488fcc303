"""How much the first level of an item code says about the next item, before any Stage II.

A diagnostic for comparing code tables (e.g. PRORec's integrated codes against semantic-only
ones) without training a generator. Counts come from the training part of every sequence (all
but the last two items, as Stage II trains); each held-out pair is (the item before the target,
the target), ``holdout`` 2 for validation, 1 for test.

- ``level1_information``: held-out mutual information, in bits, between the first code token of
  the query item and that of the target, from add-``alpha`` smoothed first-token transition counts.
  0 means the code's first level carries no transition signal; at most log2(k).
- ``code_markov_topk``: a recommender that knows only first tokens and popularity. It ranks every
  item by P(first token of the item | first token of the query) * P(item | its first token), the
  second factor being the item's share of its cluster's training interactions.
"""
import numpy as np

from prorec_jax import baselines


def _first_tokens(codes_NxL, num_items):
  codes = np.asarray(codes_NxL)
  if codes.ndim != 2 or codes.shape[0] != num_items + 1:
    raise ValueError(f"codes have shape {codes.shape}, expected [num_items + 1 = {num_items + 1}, "
                     "L] with row 0 the padding item")
  first = codes[1:, 0]
  if first.min() < 0:
    raise ValueError("an item (row >= 1) has a negative first code token")
  return np.concatenate([[-1], first]).astype(np.int64)


def _pairs(sequences, holdout):
  if holdout not in (1, 2):
    raise ValueError(f"holdout must be 1 (test) or 2 (validation), got {holdout}")
  return (np.array([s[len(s) - holdout - 1] for s in sequences]),
          np.array([s[len(s) - holdout] for s in sequences]))


def _fit(first, sequences, alpha):
  """(P[k, k] first-token transitions, marginal[k] of the next token) on the training part."""
  parts = baselines._train_parts(sequences, 2)  # pylint: disable=protected-access
  src = np.concatenate([p[:-1] for p in parts])
  dst = np.concatenate([p[1:] for p in parts])
  k = int(first.max()) + 1
  counts = np.full((k, k), float(alpha))
  np.add.at(counts, (first[src], first[dst]), 1.0)
  return counts / counts.sum(1, keepdims=True), counts.sum(0) / counts.sum()


def level1_information(codes_NxL, sequences, num_items, holdout, alpha=0.5):
  first = _first_tokens(codes_NxL, num_items)
  trans, marginal = _fit(first, sequences, alpha)
  query, target = _pairs(sequences, holdout)
  a, b = first[query], first[target]
  return float(np.mean(np.log2(trans[a, b]) - np.log2(marginal[b])))


def code_markov_topk(codes_NxL, sequences, num_items, holdout, k=20, alpha=0.5, batch=1024):
  first = _first_tokens(codes_NxL, num_items)
  trans, _ = _fit(first, sequences, alpha)
  pop = baselines.popularity_counts(baselines._train_parts(sequences, 2),  # pylint: disable=protected-access
                                    num_items) + 1.0
  cluster_total = np.bincount(first[1:], weights=pop[1:], minlength=trans.shape[0])
  within = pop[1:] / cluster_total[first[1:]]
  query, _ = _pairs(sequences, holdout)
  out = np.empty((len(query), k), np.int32)
  for lo in range(0, len(query), batch):
    scores = trans[first[query[lo:lo + batch]]][:, first[1:]] * within  # [B, N], items 1..N
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    out[lo:lo + batch] = np.take_along_axis(top, order, 1) + 1
  return out
