"""Hierarchical k-means: our batched JAX k-means vs the same recursion on scikit-learn KMeans.

  python benchmarks/bench_kmeans.py --beauty_workdir=/tmp/wd_beauty --sizes=100000,1000000

Beauty input: the workdir's ``embed/semantic.npy`` (12,101 items) reduced by PCA to ``--dim``
(128, the width of the Stage I embeddings; a random Gaussian mixture stands in when the file is
missing). Both sides run the same recursion (``codes.hierarchical_kmeans``: same leaf rule, same
fallback), k-means++ with scikit-learn's greedy 2 + log k trials, one init, ``--iters`` Lloyd
iterations at most, tolerance ``--tol``. scikit-learn runs with its default OpenMP threads and
with one thread; the faster of the two is the baseline. The JAX side is timed twice in this
process: "cold" (first call: XLA compiles every shape it meets) and "warm" (same seed again,
everything compiled). With ``--cache_probe`` it is also timed in two fresh processes sharing an
empty JAX persistent compilation cache: the second one is what a rerun or an ablation sweep pays
when ``jax_compilation_cache_dir`` is set.
Synthetic sizes are Gaussian mixtures (``N / 500`` centres in ``--dim`` dimensions).
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from prorec_jax import codes  # noqa: E402
from prorec_jax import evaluate  # noqa: E402

_BEAUTY = flags.DEFINE_string("beauty_workdir", "/tmp/wd_beauty",
                              "Workdir with embed/semantic.npy.")
_DIM = flags.DEFINE_integer("dim", 128, "Input width (PCA of the Beauty embeddings).")
_K = flags.DEFINE_integer("k", 256, "Clusters per level.")
_ITERS = flags.DEFINE_integer("iters", 50, "Max Lloyd iterations per k-means.")
_TOL = flags.DEFINE_float("tol", 1e-4, "Relative tolerance (scikit-learn's rule).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_SIZES = flags.DEFINE_list("sizes", ["100000", "1000000"], "Synthetic sizes (JAX).")
_SK_SIZES = flags.DEFINE_list("sklearn_sizes", ["100000"], "Synthetic sizes also run on sklearn.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
_CACHE_PROBE = flags.DEFINE_bool("cache_probe", True, "Also time fresh processes with a "
                                 "persistent compilation cache.")
_CHILD_CACHE = flags.DEFINE_string("child_cache", "", "Internal: run one cold Beauty hkm in this "
                                   "process with this persistent cache dir and print its time.")


def sklearn_level_fn(k, seed, iters, tol):
  """One scikit-learn KMeans per group: the recursion's level done the usual way."""
  def level_fn(x_NxD, groups, level):
    labels, inertia = [], []
    for g in groups:
      km = KMeans(k, init="k-means++", n_init=1, max_iter=iters, tol=tol,
                  random_state=seed + level).fit(x_NxD[g])
      labels.append(km.labels_.astype(np.int64))
      inertia.append(km.inertia_)
    return labels, np.array(inertia), len(groups)
  return level_fn


def mixture(n, dim, seed):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(max(1, n // 500), dim)).astype(np.float32) * 3
  x = centres[rng.integers(0, len(centres), n)]
  x += rng.normal(size=(n, dim)).astype(np.float32)
  return x


def beauty(workdir, dim, seed):
  path = os.path.join(workdir, "embed", "semantic.npy")
  if not os.path.exists(path):
    print(f"WARNING: {path} missing; a 12,101-point Gaussian mixture stands in for Beauty")
    return mixture(12101, dim, seed), "gaussian mixture (Beauty embeddings missing)"
  sem = np.load(path)[1:].astype(np.float32)
  x = PCA(dim, random_state=seed).fit_transform(sem).astype(np.float32)
  return x, f"PCA-{dim} of {path} ({sem.shape[0]} x {sem.shape[1]})"


def summary(name, seconds, info):
  lv = info["levels"]
  return dict(name=name, seconds=round(seconds, 2), depth=info["depth"],
              kmeans_calls=info["kmeans_calls"], level1_inertia=lv[0]["inertia"] if lv else None,
              level_seconds=[l["seconds"] for l in lv], level_groups=[l["groups"] for l in lv])


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def run_jax(x, label):
  kw = dict(k=_K.value, seed=_SEED.value, iters=_ITERS.value, tol=_TOL.value)
  sec, (_, info) = timed(lambda: codes.hierarchical_kmeans(x, **kw))
  return summary(f"jax {label}", sec, info)


def run_sklearn(x, label, threads=None):
  """scikit-learn's time with its default OpenMP threads, or ``threads`` of them."""
  fn = sklearn_level_fn(_K.value, _SEED.value, _ITERS.value, _TOL.value)
  with threadpool_limits(threads):
    sec, (_, info) = timed(lambda: codes.hierarchical_kmeans(x, _K.value, level_fn=fn))
  return summary(f"sklearn {label} ({threads or 'default'} threads)", sec, info)


def best_sklearn(x, label):
  """Both thread settings; on a busy machine OpenMP barriers can stall, so the faster one counts."""
  runs = [run_sklearn(x, label), run_sklearn(x, label, threads=1)]
  for r in runs:
    print(json.dumps(r), flush=True)
  return runs, min(runs, key=lambda r: r["seconds"])


def cache_probe():
  """Cold hkm on Beauty in two fresh processes sharing a new persistent compilation cache."""
  cache = tempfile.mkdtemp(prefix="prorec_xla_cache_")
  out = []
  for _ in range(2):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child_cache={cache}",
                           f"--beauty_workdir={_BEAUTY.value}", f"--dim={_DIM.value}",
                           f"--k={_K.value}", f"--iters={_ITERS.value}", f"--tol={_TOL.value}",
                           f"--seed={_SEED.value}"], capture_output=True, text=True, check=True)
    out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  shutil.rmtree(cache, ignore_errors=True)
  return dict(jax_fresh_process_empty_cache=out[0]["seconds"],
              jax_fresh_process_warm_cache=out[1]["seconds"])


def child(cache_dir):
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jnp.zeros(1).block_until_ready()
  x, _ = beauty(_BEAUTY.value, _DIM.value, _SEED.value)
  print(json.dumps(run_jax(x, "beauty fresh process")))


def main(argv):
  del argv
  if _CHILD_CACHE.value:
    return child(_CHILD_CACHE.value)
  jnp.zeros(1).block_until_ready()  # backend start-up is not k-means time
  meta = dict(commit=evaluate.commit(short=True), cpus=os.cpu_count(),
              machine=platform.processor() or platform.machine(),
              jax=jax.__version__, backend=jax.default_backend(), k=_K.value, iters=_ITERS.value,
              tol=_TOL.value, seed=_SEED.value)
  print(json.dumps(meta))
  rows = []
  x, source = beauty(_BEAUTY.value, _DIM.value, _SEED.value)
  print(f"Beauty input: {source}, {x.shape}")
  cold = run_jax(x, "beauty cold (incl. compile)")
  warm = run_jax(x, "beauty warm (compiled)")
  for r in (cold, warm):
    print(json.dumps(r), flush=True)
  sk_runs, sk = best_sklearn(x, "beauty")
  rows += [cold, warm] + sk_runs
  ratio = dict(sklearn_run=sk["name"], sklearn_over_jax_cold=sk["seconds"] / cold["seconds"],
               sklearn_over_jax_warm=sk["seconds"] / warm["seconds"],
               level1_inertia_jax=cold["level1_inertia"],
               level1_inertia_sklearn=sk["level1_inertia"],
               inertia_ratio_jax_over_sklearn=cold["level1_inertia"] / sk["level1_inertia"])
  if _CACHE_PROBE.value:
    ratio.update(cache_probe())
    ratio["sklearn_over_jax_fresh_process_warm_cache"] = (
        sk["seconds"] / ratio["jax_fresh_process_warm_cache"])
  print("Beauty:", json.dumps(ratio), flush=True)
  for size in [int(s) for s in _SIZES.value if s]:
    xs = mixture(size, _DIM.value, _SEED.value)
    rows.append(run_jax(xs, f"synthetic {size}"))
    print(json.dumps(rows[-1]), flush=True)
    if str(size) in _SK_SIZES.value:
      rows += best_sklearn(xs, f"synthetic {size}")[0]
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(dict(meta=meta, beauty_input=source, beauty=ratio, rows=rows), f, indent=2)


if __name__ == "__main__":
  app.run(main)
