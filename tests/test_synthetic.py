import numpy as np

from configs import prorec
from prorec_jax import baselines
from prorec_jax.data import stage


def _read(arg="dataset=synthetic,runlocal=True", seed=0):
  c = prorec.get_config(arg)
  with c.unlocked():
    c.seed = seed
  return stage.read(c)


def test_deterministic_by_seed():
  a, b, other = _read(seed=1), _read(seed=1), _read(seed=2)
  assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
  assert a.items == b.items
  assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, other.sequences))


def test_shapes_follow_config_and_items_do_not_repeat():
  c = prorec.get_config("dataset=synthetic,runlocal=True")
  ds = _read()
  s = c.data.synthetic
  assert ds.num_users == s.num_users and ds.num_items == s.num_items
  for seq in ds.sequences:
    assert s.min_len <= len(seq) <= s.max_len
    assert len(set(seq.tolist())) == len(seq)
    assert seq.min() >= 1 and seq.max() <= ds.num_items


def test_planted_transitions_beat_popularity_by_a_wide_margin():
  ds = _read("dataset=synthetic")  # the demo size
  res = baselines.evaluate(ds.sequences, ds.num_items)
  markov, pop = res["markov"]["test"], res["popularity"]["test"]
  assert markov["recall@10"] > 0.5
  assert markov["recall@10"] > 5 * pop["recall@10"]
  assert markov["ndcg@10"] > 5 * pop["ndcg@10"]


def test_text_correlates_with_but_does_not_equal_clusters():
  ds = _read("dataset=synthetic")
  cluster = np.array(ds.info["planted_clusters"])
  topic = np.array(ds.info["planted_topics"])
  category = np.array([it.attributes[1] for it in ds.items])
  # The category word in the text is the item's topic.
  from prorec_jax.data import synthetic
  assert all(category[i] == synthetic.TOPICS[topic[i]][0] for i in range(ds.num_items))
  # Purity of clusters w.r.t. topic: high (correlated) but below 1 (not equal).
  purity = np.mean([np.bincount(topic[cluster == c]).max() / (cluster == c).sum()
                    for c in np.unique(cluster)])
  assert 0.6 < purity < 0.95
