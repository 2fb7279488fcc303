"""Benchmark of the embed stage, end to end: item texts -> workdir/embed/semantic.npy.

  .venv/bin/python benchmarks/bench_embed.py --dataset=beauty --repeats=3

Each repeat runs ``embed.run(config, workdir)`` in a fresh Python process, so the figure includes
importing transformers, reading and converting the weights, tokenising, compiling and encoding:
what ``launch.py --stage=embed`` pays. The data stage runs once beforehand and is not timed.
``--mode=plain32`` times the naive loop instead (batches of 32 in item order, each padded to its
longest text, one call per batch) on the same machine, for comparison.

Prints one JSON line per repeat (wall seconds of the process and of the stage, its CPU seconds,
the CPU seconds other processes used meanwhile, i.e. contention, the 1-minute load average before
the run, machine and commit) and a summary line.
"""
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_string("dataset", "beauty", "Dataset name, as in configs/prorec.py.")
flags.DEFINE_string("workdir", "/tmp/prorec_bench_embed", "Scratch workdir (embed/ is deleted).")
flags.DEFINE_integer("repeats", 1, "Fresh-process repeats.")
flags.DEFINE_integer("batch_size", 0, "Override embed.batch_size (0: the config's).")
flags.DEFINE_integer("max_batch_tokens", -1, "Set embed.max_batch_tokens (-1: leave unset, i.e. "
                     "the CPU default; 0: no cap, batch_size rows at every length).")
flags.DEFINE_enum("mode", "stage", ["stage", "plain32"], "What to time.")
flags.DEFINE_bool("child", False, "Internal: run one timed repeat in this process.")
FLAGS = flags.FLAGS


def _config():
  from configs import prorec  # pylint: disable=g-import-not-at-top
  config = prorec.get_config(f"dataset={FLAGS.dataset}")
  with config.unlocked():
    if FLAGS.batch_size:
      config.embed.batch_size = FLAGS.batch_size
    if FLAGS.max_batch_tokens >= 0:
      config.embed.max_batch_tokens = FLAGS.max_batch_tokens
  return config


def _plain32(config, workdir):
  """The baseline: a plain batch-32 loop, no sorting or bucketing, one compile per new shape."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prorec_jax import embed  # pylint: disable=g-import-not-at-top
  from prorec_jax import text_encoders  # pylint: disable=g-import-not-at-top
  from prorec_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  e = config.embed
  texts = embed.item_texts(dataset_lib.load(workdir), e.fields)
  enc = text_encoders.load(e.encoder, e.family)
  fn = text_encoders.encode_fn(enc, e.pooling, e.normalize)
  out = []
  for s in range(0, len(texts), 32):
    batch = enc.tokenizer(texts[s:s + 32], padding=True, truncation=True, max_length=e.max_tokens,
                          return_tensors="np", return_token_type_ids=False)
    out.append(np.asarray(fn(enc.params, batch["input_ids"].astype(np.int32),
                             batch["attention_mask"].astype(np.int32))))
  return np.concatenate(out)


def _child():
  t0 = time.time()
  from prorec_jax import embed  # pylint: disable=g-import-not-at-top
  config = _config()
  if FLAGS.mode == "stage":
    embed.run(config, FLAGS.workdir)
  else:
    _plain32(config, FLAGS.workdir)
  print("RESULT " + json.dumps(dict(stage_seconds=time.time() - t0)), flush=True)


def _git(*args):
  try:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (subprocess.CalledProcessError, OSError):
    return None


def _busy_cpu_seconds():
  """CPU seconds spent so far by every process on the machine (from /proc/stat)."""
  with open("/proc/stat") as f:
    fields = [int(x) for x in f.readline().split()[1:]]
  idle = fields[3] + fields[4]  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _parent():
  from prorec_jax.data import stage as data_stage  # pylint: disable=g-import-not-at-top
  config = _config()
  data_stage.run(config, FLAGS.workdir)
  commit = _git("rev-parse", "--short", "HEAD") or "no commit yet"
  dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) or commit == "no commit yet"
  walls = []
  for r in range(FLAGS.repeats):
    shutil.rmtree(os.path.join(FLAGS.workdir, "embed"), ignore_errors=True)
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = _busy_cpu_seconds()
    t0 = time.time()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           *[a for a in sys.argv[1:] if not a.startswith("--repeats")]],
                          capture_output=True, text=True, check=False)
    wall = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    # CPU time other processes took during the run: 0 means the figure is uncontended.
    others = _busy_cpu_seconds() - busy0 - cpu
    if proc.returncode:
      sys.stderr.write(proc.stdout + proc.stderr)
      raise SystemExit(f"repeat {r} failed with exit code {proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    walls.append(wall)
    print(json.dumps(dict(
        json.loads(line[len("RESULT "):]), repeat=r, mode=FLAGS.mode, dataset=FLAGS.dataset,
        process_seconds=round(wall, 2),
        cpu_seconds=round(cpu, 1), other_processes_cpu_seconds=round(others, 1),
        loadavg_1min_before=round(load_before, 2), batch_size=config.embed.batch_size,
        max_batch_tokens=config.embed.get("max_batch_tokens", "default"),
        encoder=config.embed.encoder, cpus=os.cpu_count(), machine=platform.processor() or
        platform.machine(), commit=commit, dirty=dirty)), flush=True)
  print(f"summary: {FLAGS.mode} {FLAGS.dataset}: process wall seconds min {min(walls):.1f}, "
        f"median {sorted(walls)[len(walls) // 2]:.1f} over {len(walls)} repeats")


def main(argv):
  del argv
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  _child() if FLAGS.child else _parent()  # pylint: disable=expression-not-assigned


if __name__ == "__main__":
  app.run(main)
