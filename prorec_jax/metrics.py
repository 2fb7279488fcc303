"""Full-ranking Recall@k / NDCG@k for a single held-out target per user."""
import numpy as np

KS = (5, 10, 20)


def target_rank(topk_BxK, target_B):
  """0-based rank of each target inside its top-k list; K (a miss) when absent."""
  topk_BxK = np.asarray(topk_BxK)
  hit = topk_BxK == np.asarray(target_B)[:, None]
  return np.where(hit.any(1), hit.argmax(1), topk_BxK.shape[1])


def from_ranks(rank_B, ks=KS):
  rank_B = np.asarray(rank_B, np.float64)
  out = {}
  for k in ks:
    hit = rank_B < k
    out[f"recall@{k}"] = float(hit.mean())
    out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(rank_B + 2.0), 0.0).mean())
  return out


def from_topk(topk_BxK, target_B, ks=KS):
  if max(ks) > np.shape(topk_BxK)[1]:
    raise ValueError(f"top-k lists of length {np.shape(topk_BxK)[1]} cannot give metrics @{max(ks)}")
  return from_ranks(target_rank(topk_BxK, target_B), ks)
