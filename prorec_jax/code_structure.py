"""How much the first level of an item code says about the next item, before any Stage II.

A diagnostic for comparing code tables (e.g. PRORec's integrated codes against semantic-only
ones) without training a generator. Counts come from the training part of every sequence (all
but the last two items, as Stage II trains); each held-out pair is (the item before the target,
the target), ``holdout`` 2 for validation, 1 for test.

- ``level1_information``: held-out mutual information, in bits, between the first code token of
  the query item and that of the target. Transition counts between first tokens are smoothed
  towards the next token's marginal, so a query token never seen in training predicts the
  marginal (0 bits). As a plug-in estimate on held-out pairs it can fall below 0 or, with few
  pairs, pass log2(k).
- ``chance_information``: the same estimate after shuffling which item has which first token
  (cluster sizes kept). Clusters of popular items score above 0 even without any transition
  structure, and more so the more clusters and the more even their sizes, so compare code tables
  by the bits above this chance level.
- ``code_markov_topk``: a recommender that knows only first tokens and popularity. It ranks every
  item by P(first token of the item | first token of the query) * P(item | its first token), the
  second factor being the item's share of its cluster's training interactions (ties: lower id).
"""
import numpy as np

from prorec_jax import baselines


def _first_tokens(codes_NxL, num_items):
  """Each item's first token renumbered 0..k-1 over the tokens in use; entry 0 (padding) is -1."""
  codes = np.asarray(codes_NxL)
  if codes.ndim != 2 or codes.shape[0] != num_items + 1:
    raise ValueError(f"codes have shape {codes.shape}, expected [num_items + 1 = {num_items + 1}, "
                     "L] with row 0 the padding item")
  if codes[1:, 0].min() < 0:
    raise ValueError("an item (row >= 1) has a negative first code token")
  _, dense = np.unique(codes[1:, 0], return_inverse=True)
  return np.concatenate([[-1], dense.reshape(-1)]).astype(np.int64)


def num_clusters(codes_NxL):
  """First-level tokens in use (code ids no item has, e.g. dead RQ-VAE entries, not counted)."""
  return int(len(np.unique(np.asarray(codes_NxL)[1:, 0])))


def _check(sequences, holdout, alpha):
  if holdout not in (1, 2):
    raise ValueError(f"holdout must be 1 (test) or 2 (validation), got {holdout}")
  if alpha <= 0:
    raise ValueError(f"alpha must be > 0, got {alpha}")
  if min(len(s) for s in sequences) < 3:
    raise ValueError("every sequence needs at least 3 items (training part, validation, test)")
  if min(int(np.min(s)) for s in sequences) < 1:
    raise ValueError("sequences hold item 0 (padding); items are 1..num_items")


def _pairs(sequences, holdout):
  return (np.array([s[len(s) - holdout - 1] for s in sequences]),
          np.array([s[len(s) - holdout] for s in sequences]))


def _fit(first, sequences, alpha):
  """(P[k, k] first-token transitions smoothed towards the marginal, marginal[k] of the next
  token), both counted on the training part."""
  parts = baselines._train_parts(sequences, 2)  # pylint: disable=protected-access
  src = np.concatenate([p[:-1] for p in parts])
  dst = np.concatenate([p[1:] for p in parts])
  k = int(first.max()) + 1
  counts = np.zeros((k, k))
  np.add.at(counts, (first[src], first[dst]), 1.0)
  marginal = (counts.sum(0) + alpha) / (counts.sum() + alpha * k)  # > 0: unseen targets too
  prior = alpha * k
  return (counts + prior * marginal) / (counts.sum(1, keepdims=True) + prior), marginal


def _information(first, sequences, holdout, alpha):
  trans, marginal = _fit(first, sequences, alpha)
  query, target = _pairs(sequences, holdout)
  a, b = first[query], first[target]
  return float(np.mean(np.log2(trans[a, b]) - np.log2(marginal[b])))


def level1_information(codes_NxL, sequences, num_items, holdout, alpha=0.5):
  _check(sequences, holdout, alpha)
  return _information(_first_tokens(codes_NxL, num_items), sequences, holdout, alpha)


def chance_information(codes_NxL, sequences, num_items, holdout, alpha=0.5, seed=0, reps=3):
  """Mean ``level1_information`` over ``reps`` shuffles of the items' first tokens."""
  _check(sequences, holdout, alpha)
  first = _first_tokens(codes_NxL, num_items)
  rng = np.random.default_rng(seed)
  return float(np.mean([_information(np.concatenate([[-1], rng.permutation(first[1:])]),
                                     sequences, holdout, alpha) for _ in range(reps)]))


def code_markov_topk(codes_NxL, sequences, num_items, holdout, k=20, alpha=0.5, batch=512):
  _check(sequences, holdout, alpha)
  if not 1 <= k <= num_items:
    raise ValueError(f"a top-{k} list needs 1 <= k <= num_items = {num_items}")
  first = _first_tokens(codes_NxL, num_items)
  trans, _ = _fit(first, sequences, alpha)
  pop = baselines.popularity_counts(baselines._train_parts(sequences, 2),  # pylint: disable=protected-access
                                    num_items) + 1.0
  cluster_total = np.bincount(first[1:], weights=pop[1:])
  within = pop[1:] / cluster_total[first[1:]]
  query, _ = _pairs(sequences, holdout)
  out = np.empty((len(query), k), np.int32)
  for lo in range(0, len(query), batch):
    scores = trans[first[query[lo:lo + batch]]][:, first[1:]] * within  # [B, N], items 1..N
    out[lo:lo + batch] = np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1
  return out
