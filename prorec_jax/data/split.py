"""Leave-one-out split: last item = test target, second-to-last = validation target.

Histories are left-padded with 0 to ``max_history`` (the most recent item is in the last column).
Training examples are every prefix of the training part ``seq[:-2]`` that has at least one history
item: target ``seq[t]`` with history ``seq[:t]`` for ``1 <= t < n - 2``.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Examples:
  history: np.ndarray  # int32 [E, max_history], left-padded with 0
  target: np.ndarray  # int32 [E]
  user: np.ndarray  # int32 [E], row of the user in the source order

  def __len__(self):
    return len(self.target)


@dataclasses.dataclass(frozen=True)
class Split:
  train: Examples
  valid: Examples  # one per user, in source order
  test: Examples  # one per user, in source order


def _pad_left(seqs, width):
  out = np.zeros((len(seqs), width), np.int32)
  for r, s in enumerate(seqs):
    s = s[-width:]
    if len(s):
      out[r, width - len(s):] = s
  return out


def _examples(hists, targets, users, width):
  return Examples(_pad_left(hists, width), np.asarray(targets, np.int32).reshape(-1),
                  np.asarray(users, np.int32).reshape(-1))


def leave_one_out(sequences, max_history=20):
  tr_h, tr_t, tr_u = [], [], []
  for u, seq in enumerate(sequences):
    if len(seq) < 3:
      raise ValueError(f"user row {u} has {len(seq)} items; leave-one-out needs at least 3")
    for t in range(1, len(seq) - 2):
      tr_h.append(seq[max(0, t - max_history):t])
      tr_t.append(seq[t])
      tr_u.append(u)
  users = np.arange(len(sequences))
  return Split(
      train=_examples(tr_h, tr_t, tr_u, max_history),
      valid=_examples([s[:-2] for s in sequences], [s[-2] for s in sequences], users, max_history),
      test=_examples([s[:-1] for s in sequences], [s[-1] for s in sequences], users, max_history))
