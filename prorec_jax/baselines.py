"""Reference recommenders that need no training: popularity and first-order Markov transitions.

They bound what a learned model must beat: on the synthetic set the planted transitions make
Markov far better than popularity; on Amazon they are the usual sanity floor.

Counts come from each sequence minus its last ``fit_holdout`` items; the query is the last item
before the ``holdout`` held-out ones. ``markov`` and ``popularity`` refit for the test split
(``fit_holdout = holdout = 1``: every user's validation interaction counts too), as a Markov chain
rebuilt before testing would. The generative models never train on validation interactions, so
the like-for-like bar is ``markov_train`` (counts from the training part only, ``fit_holdout=2``,
for both splits).
"""
import numpy as np
import scipy.sparse as sp

from prorec_jax import metrics

def _train_parts(sequences, holdout):
  return [s[:len(s) - holdout] for s in sequences]


def popularity_counts(parts, num_items):
  return np.bincount(np.concatenate(parts), minlength=num_items + 1).astype(np.float64)


def transitions(parts, num_items):
  src = np.concatenate([p[:-1] for p in parts])
  dst = np.concatenate([p[1:] for p in parts])
  n = num_items + 1
  return sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))


def recommend(sequences, num_items, holdout, method, k=20, fit_holdout=None):
  """Top-k per user from the first ``len - holdout`` items (holdout 2 = validation, 1 = test),
  counting on the first ``len - fit_holdout`` items of every user (default: ``holdout``).

  Markov ranks the items that followed the user's last item by transition count, popularity
  breaking ties and filling the list.
  """
  if num_items < k:
    raise ValueError(f"a top-{k} list needs at least {k} items, the catalog has {num_items}")
  if method not in ("popularity", "markov"):
    raise ValueError(f"unknown baseline {method!r}")
  fit_holdout = holdout if fit_holdout is None else fit_holdout
  if fit_holdout < holdout:
    raise ValueError(f"fit_holdout {fit_holdout} < holdout {holdout} would count the targets")
  parts = _train_parts(sequences, fit_holdout)
  queries = [s[len(s) - holdout - 1] for s in sequences]
  pop = popularity_counts(parts, num_items)
  pop[0] = -1.0  # padding is never recommended
  by_pop = np.argsort(-pop, kind="stable")
  out = np.tile(by_pop[:k].astype(np.int32), (len(parts), 1))
  if method == "popularity":
    return out
  trans = transitions(parts, num_items)
  pop_tiebreak = pop / (pop.max() + 1.0)  # < 1, so it never outweighs one transition
  for u, x in enumerate(queries):
    lo, hi = trans.indptr[x], trans.indptr[x + 1]
    cand, counts = trans.indices[lo:hi], trans.data[lo:hi]
    top = cand[np.argsort(-(counts + pop_tiebreak[cand]), kind="stable")[:k]]
    if len(top) < k:
      top = np.concatenate([top, by_pop[~np.isin(by_pop, top)][:k - len(top)]])
    out[u] = top
  return out


def evaluate(sequences, num_items, ks=metrics.KS):
  """Validation and test metrics of the baselines (``markov_train``: training part only)."""
  res = {}
  for name, method, fit in (("popularity", "popularity", None), ("markov", "markov", None),
                            ("markov_train", "markov", 2)):
    res[name] = {
        split: metrics.from_topk(recommend(sequences, num_items, holdout, method, max(ks), fit),
                                 [s[-holdout] for s in sequences], ks)
        for split, holdout in (("valid", 2), ("test", 1))}
  return res
