"""Batched jitted k-means: correctness against known structure, scikit-learn, and padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from prorec_jax import kmeans as km


def _blobs(n_per, centers, scale, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(len(centers)), n_per)
  x = centers[labels] + scale * rng.normal(size=(len(labels), centers.shape[1]))
  return x.astype(np.float32), labels


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_recovers_well_separated_blobs(init):
  centers = np.random.default_rng(1).normal(size=(6, 8)) * 20
  x, labels = _blobs(50, centers, 0.5)
  # Random init may put two seeds in one blob (a local minimum): keep the best of a few keys.
  keys = range(1 if init == "kmeans++" else 5)
  runs = [km.kmeans(jax.random.key(s), x, 6, init=init) for s in keys]
  res = min(runs, key=lambda r: float(r.inertia))
  assert adjusted_rand_score(labels, np.asarray(res.labels)) == 1.0
  found = np.sort(np.asarray(res.centroids), axis=0)
  np.testing.assert_allclose(found, np.sort(centers, axis=0), atol=0.5)


def test_inertia_within_2_percent_of_sklearn():
  x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
  ours = [float(km.kmeans(jax.random.key(s), x, 32).inertia) for s in range(3)]
  # Same budget: one greedy k-means++ init (scikit-learn's default 2 + log k trials), 50 iterations.
  theirs = [KMeans(32, n_init=1, max_iter=50, tol=1e-4, random_state=s).fit(x).inertia_
            for s in range(3)]
  assert np.mean(ours) <= 1.02 * np.mean(theirs), (ours, theirs)


def test_inertia_and_labels_are_consistent():
  x = np.random.default_rng(2).normal(size=(500, 4)).astype(np.float32)
  res = km.kmeans(jax.random.key(0), x, 7)
  c, lab = np.asarray(res.centroids), np.asarray(res.labels)
  d = ((x[:, None] - c[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(lab, d.argmin(1))
  np.testing.assert_allclose(float(res.inertia), d.min(1).sum(), rtol=1e-4)


def test_padded_points_never_move_a_centroid():
  x, _ = _blobs(40, np.random.default_rng(3).normal(size=(4, 5)) * 5, 1.0)
  plain = km.kmeans(jax.random.key(7), x, 4)
  junk = np.full((60, 5), 1e6, np.float32)
  junk[::2] = np.nan  # padding may hold anything
  xp = np.concatenate([x, junk])
  wp = np.concatenate([np.ones(len(x)), np.zeros(len(junk))])
  padded = km.kmeans(jax.random.key(7), xp, 4, w_N=wp)
  np.testing.assert_allclose(padded.centroids, plain.centroids, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(padded.labels[:len(x)], plain.labels)
  np.testing.assert_allclose(float(padded.inertia), float(plain.inertia), rtol=1e-5)


def test_batched_groups_are_independent_and_weighted():
  rng = np.random.default_rng(4)
  a, _ = _blobs(30, rng.normal(size=(3, 6)) * 10, 0.3)
  b, _ = _blobs(10, rng.normal(size=(3, 6)) * 10 + 100, 0.3)
  x = np.zeros((2, 90, 6), np.float32)
  w = np.zeros((2, 90), np.float32)
  x[0], w[0] = a, 1
  x[1, :30], w[1, :30] = b, 1
  res = km.batched_kmeans(jax.random.key(0), jnp.asarray(x), jnp.asarray(w), k=3)
  for g, pts in ((0, a), (1, b)):
    lab = np.asarray(res.labels[g, :len(pts)])
    for c in range(3):  # every centroid is the mean of its own group's members
      np.testing.assert_allclose(res.centroids[g, c], pts[lab == c].mean(0), atol=1e-4)


def test_empty_clusters_are_reseeded_at_the_farthest_points():
  x = jnp.asarray([[0.0], [0.1], [5.0], [9.0]])
  w = jnp.ones(4)
  labels = jnp.zeros(4, jnp.int32)  # everything in cluster 0: clusters 1 and 2 are empty
  mind = jnp.asarray([0.0, 0.01, 25.0, 81.0])
  c = km._update(x, w, labels, mind, jnp.zeros((3, 1)))
  np.testing.assert_allclose(np.asarray(c)[:, 0], [3.525, 9.0, 5.0])


def test_fewer_points_than_clusters_and_duplicates():
  x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, 4 copies each
  res = km.kmeans(jax.random.key(0), x, 5)
  assert float(res.inertia) == pytest.approx(0.0, abs=1e-6)
  assert len(np.unique(np.asarray(res.labels))) == 3
  res = km.kmeans(jax.random.key(0), x[:3], 8)  # fewer points than clusters
  assert float(res.inertia) == pytest.approx(0.0, abs=1e-6)


def test_tolerance_stops_early():
  x, _ = _blobs(100, np.random.default_rng(5).normal(size=(3, 4)) * 30, 0.1)
  res = km.kmeans(jax.random.key(0), x, 3, iters=100, tol=1e-4)
  assert int(res.iterations) < 10


def test_same_key_same_result_and_chunking_does_not_change_it():
  x = np.random.default_rng(6).normal(size=(1024, 8)).astype(np.float32)
  a = km.kmeans(jax.random.key(3), x, 10)
  b = km.kmeans(jax.random.key(3), x, 10, chunk=256)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-5, atol=1e-6)
