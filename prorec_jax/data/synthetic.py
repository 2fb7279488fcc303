"""Synthetic data with planted collaborative and semantic structure (the ``make demo`` default).

Collaborative: items fall into clusters; every item has a few successors, mostly in its own cluster,
and users walk from item to successor (with some drift within the cluster and some popularity
jumps). Semantic: every item draws its title words from a topic; a cluster has a home topic but
``topic_noise`` of its items take another, so text correlates with, but does not equal, behaviour.
A model that learns transitions beats popularity by a wide margin; see tests/test_synthetic.py.
"""
import numpy as np

from prorec_jax.data import dataset as dataset_lib

TOPICS = (
    ("skin care", "serum moisturizer cleanser toner cream lotion retinol spf hydrating facial"),
    ("hair care", "shampoo conditioner hair mask argan curl styling gel keratin scalp"),
    ("nails", "nail polish lacquer topcoat gel manicure cuticle glitter file enamel"),
    ("fragrance", "perfume eau parfum cologne mist floral musk citrus vanilla spray"),
    ("camping", "tent sleeping bag lantern stove backpack tarp hammock cooler trekking"),
    ("fishing", "rod reel lure tackle hook line bait fly spinning bobber"),
    ("cycling", "bike helmet pedal saddle tire chain jersey bicycle pump light"),
    ("fitness", "dumbbell yoga mat kettlebell resistance band treadmill jump rope foam"),
    ("board games", "board game strategy dice cards party family cooperative tokens expansion"),
    ("puzzles", "jigsaw puzzle pieces 1000 brain teaser cube wooden logic maze"),
    ("dolls", "doll dress house accessories fashion baby plush figure outfit princess"),
    ("building toys", "blocks bricks building set construction kit magnetic tiles robot gears"),
)
ADJECTIVES = "classic deluxe mini pro ultra natural premium compact travel original advanced".split()
BRANDS = "Acme Zenith Nova Orbit Lumen Vireo Solace Kestrel Tundra Halcyon Quill Ember".split()


def generate(num_users, num_items, num_clusters, num_topics, topic_noise, min_len, max_len,
             follow_prob, stay_prob, successors, seed=0):
  if not 1 <= num_topics <= len(TOPICS):
    raise ValueError(f"synthetic num_topics must be in 1..{len(TOPICS)}, got {num_topics}")
  if not 3 <= min_len <= max_len:
    raise ValueError(f"need 3 <= min_len <= max_len, got {min_len}, {max_len}")
  if num_items < num_clusters * (successors + 1):
    raise ValueError("too few synthetic items for the clusters and successors asked for")
  rng = np.random.default_rng(seed)
  cluster = rng.permutation(np.arange(num_items) % num_clusters)
  members = [np.flatnonzero(cluster == c) for c in range(num_clusters)]
  home_topic = np.arange(num_clusters) % num_topics
  noisy = rng.random(num_items) < topic_noise
  topic = np.where(noisy, rng.integers(0, num_topics, num_items), home_topic[cluster])

  succ = np.stack([rng.choice(members[cluster[i]][members[cluster[i]] != i], successors,
                              replace=False) for i in range(num_items)])
  popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
  popularity = rng.permutation(popularity / popularity.sum())

  sequences = []
  for _ in range(num_users):
    length = rng.integers(min_len, max_len + 1)
    seq = [rng.choice(num_items, p=popularity)]
    while len(seq) < length:
      cur, r = seq[-1], rng.random()
      for _ in range(10):  # items do not repeat within a user, as in the Amazon data
        if r < follow_prob:
          nxt = rng.choice(succ[cur])
        elif r < follow_prob + stay_prob:
          nxt = rng.choice(members[cluster[cur]])
        else:
          nxt = rng.choice(num_items, p=popularity)
        if nxt not in seq:
          break
        r = rng.random()
      else:
        nxt = rng.choice(np.setdiff1d(np.arange(num_items), seq))
      seq.append(nxt)
    sequences.append(np.array(seq, np.int32) + 1)

  items = []
  for i in range(num_items):
    category, vocab = TOPICS[topic[i]]
    words = rng.choice(vocab.split(), 2, replace=False)
    title = f"{rng.choice(ADJECTIVES)} {words[0]} {words[1]} {i + 1}"
    items.append(dataset_lib.Item(f"item{i + 1}", title, (str(rng.choice(BRANDS)), category)))
  info = dict(item_text="synthetic topic words + brand + topic",
              planted_clusters=cluster.tolist(), planted_topics=topic.tolist())
  users = [f"user{u + 1}" for u in range(num_users)]
  return dataset_lib.Dataset("synthetic", sequences, users, items, info)
