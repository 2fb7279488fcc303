import numpy as np
import pytest

from prorec_jax import baselines
from prorec_jax import metrics


def test_metrics_hand_computed():
  topk = np.array([[3, 1, 2], [5, 6, 7], [9, 8, 4]])
  target = np.array([3, 6, 1])  # ranks 0, 1, miss
  np.testing.assert_array_equal(metrics.target_rank(topk, target), [0, 1, 3])
  m = metrics.from_topk(topk, target, ks=(1, 2, 3))
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["recall@2"] == pytest.approx(2 / 3)
  assert m["recall@3"] == pytest.approx(2 / 3)
  assert m["ndcg@1"] == pytest.approx(1 / 3)
  assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_metrics_need_long_enough_lists():
  with pytest.raises(ValueError, match="@20"):
    metrics.from_topk(np.zeros((2, 10), int), np.zeros(2, int))


def _seqs():
  # Transitions in the training parts: 1 -> 2 (x3), 1 -> 3 (x1), 4 -> 5 (x1).
  return [np.array(s, np.int32) for s in (
      [1, 2, 9, 9], [1, 2, 7, 8], [1, 2, 6, 6], [1, 3, 5, 1], [4, 5, 2, 1], [8, 1, 2, 3])]


def test_popularity_ranks_by_training_counts():
  top = baselines.recommend(_seqs(), 25, holdout=2, method="popularity", k=20)
  assert top[0, 0] == 1 and top[0, 1] == 2  # item 1 (6x) then item 2 (4x)
  assert 0 not in top
  assert (top == top[0]).all()


def test_markov_follows_transitions_then_popularity():
  seqs = _seqs()
  top = baselines.recommend(seqs, 25, holdout=2, method="markov", k=20)
  # User 5's training part is [8, 1]: after 1 comes 2 (3x... counted from all parts) then 3.
  assert list(top[5][:2]) == [2, 3]
  assert len(set(top[5].tolist())) == 20 and 0 not in top[5]
  # User 4's last training item is 5, which has no successor: pure popularity order.
  pop = baselines.recommend(seqs, 25, holdout=2, method="popularity", k=20)
  np.testing.assert_array_equal(top[4], pop[4])


def test_markov_train_does_not_count_validation_interactions():
  # 3 -> 4 only happens as a validation interaction (user 0); the test query of user 1 is 3.
  seqs = [np.array(s, np.int32) for s in ([1, 2, 3, 4, 9], [5, 6, 7, 3, 8], [2, 8, 6, 5])]
  refit = baselines.recommend(seqs, 9, holdout=1, method="markov", k=5)
  train = baselines.recommend(seqs, 9, holdout=1, method="markov", k=5, fit_holdout=2)
  assert refit[1, 0] == 4 and train[1, 0] != 4
  # Validation: both count the training part only, so they agree.
  np.testing.assert_array_equal(
      baselines.recommend(seqs, 9, 2, "markov", 5),
      baselines.recommend(seqs, 9, 2, "markov", 5, fit_holdout=2))
  res = baselines.evaluate(seqs, 9, ks=(5,))
  assert res["markov_train"]["valid"] == res["markov"]["valid"]
  with pytest.raises(ValueError, match="would count the targets"):
    baselines.recommend(seqs, 9, 2, "markov", 5, fit_holdout=1)


def test_baseline_errors():
  with pytest.raises(ValueError, match="unknown baseline"):
    baselines.recommend(_seqs(), 25, 1, "bpr")
  with pytest.raises(ValueError, match="at least 20 items"):
    baselines.recommend(_seqs(), 10, 1, "popularity")
