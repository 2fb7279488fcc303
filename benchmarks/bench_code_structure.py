"""How much each run's code table says about the next item before Stage II, beside what its Stage II
reached (prorec_jax/code_structure.py).

  .venv/bin/python benchmarks/bench_code_structure.py \
      --runs=prorec:/tmp/pipe_beauty,semantic_only:/tmp/prorec_runs/beauty_semantic_only_buckets \
      --out=benchmarks/results/code_structure_beauty.json

Each run needs a codes stage that is current under its config.json (a row notes an align stage
that finished under another align config, e.g. before fields were added); all runs must hold
the same data. The Stage II columns come from a run's eval/results.json when its codes, train
and eval stages are all current (a stage copied by ``--reuse`` and then made stale by a rebuilt
upstream stage is left out). No model is run: about a minute per Beauty run on the 2-core CPU.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from prorec_jax import artifacts  # noqa: E402
from prorec_jax import codes as codes_lib  # noqa: E402
from prorec_jax import code_structure  # noqa: E402
from prorec_jax import evaluate  # noqa: E402
from prorec_jax import metrics  # noqa: E402
from prorec_jax import pipeline  # noqa: E402
from prorec_jax.data import dataset as dataset_lib  # noqa: E402

HOLDOUT = dict(valid=2, test=1)


def parse_runs(text):
  runs = []
  for part in filter(None, text.split(",")):
    label, sep, workdir = part.partition(":")
    if not sep or not label or not workdir:
      raise ValueError(f"--runs entry {part!r} is not label:workdir")
    runs.append((label, workdir))
  if not runs:
    raise ValueError("--runs is empty")
  return runs


def measure(label, workdir, ds):
  config = pipeline.load_config(workdir)
  if not pipeline.is_current(workdir, "codes"):  # config.json would then mislabel the codes
    raise ValueError(f"{workdir}: the codes stage is not current under its config.json; "
                     "rerun --stage=codes there first")
  _, upstream = codes_lib.input_path(config, workdir)
  align_current = upstream != "align" or pipeline.is_current(workdir, "align")
  if not align_current:  # e.g. align ran before config fields were added (with their defaults)
    print(f"{label}: the align stage finished under another align config than config.json's; "
          "the fusion label is config.json's", flush=True)
  codes = np.load(os.path.join(workdir, "codes", "codes.npy"))
  row = dict(label=label, workdir=workdir, fusion=config.align.fusion,
             codes_method=config.codes.method, codes_input=config.codes.input,
             align_current=align_current, first_level_clusters=code_structure.num_clusters(codes))
  for split, h in HOLDOUT.items():
    targets = np.array([s[len(s) - h] for s in ds.sequences])
    bits = code_structure.level1_information(codes, ds.sequences, ds.num_items, h)
    chance = code_structure.chance_information(codes, ds.sequences, ds.num_items, h,
                                               seed=config.seed)
    row[split] = dict(
        level1_bits=bits, chance_bits=chance, bits_above_chance=bits - chance,
        code_markov=metrics.from_topk(
            code_structure.code_markov_topk(codes, ds.sequences, ds.num_items, h), targets))
  if all(pipeline.is_current(workdir, s) for s in ("train", "eval")):
    row["stage2_test"] = artifacts.load_json(os.path.join(workdir, "eval", "results.json"))["test"]
  elif os.path.exists(os.path.join(workdir, "eval", "results.json")):
    print(f"{label}: eval/results.json is not of these codes (a stale or unfinished stage); "
          "left out", flush=True)
  return row


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--runs", required=True, help="label:workdir,... (finished codes stages)")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  runs = parse_runs(args.runs)
  ds = dataset_lib.load(runs[0][1])
  rows = []
  for label, workdir in runs:
    other = dataset_lib.load(workdir)
    if other.num_items != ds.num_items or len(other.sequences) != len(ds.sequences) or not all(
        np.array_equal(a, b) for a, b in zip(other.sequences, ds.sequences)):
      raise ValueError(f"{workdir} holds other data than {runs[0][1]}")
    row = measure(label, workdir, ds)
    t = row["test"]
    print(f"{label:16s} level-1 bits {t['level1_bits']:.3f} (chance {t['chance_bits']:.3f})  "
          f"code-Markov R@10 "
          f"{t['code_markov']['recall@10']:.4f}  Stage II R@10 "
          f"{row.get('stage2_test', {}).get('recall@10', float('nan')):.4f}", flush=True)
    rows.append(row)
  out = dict(kind="code_structure", dataset=pipeline.load_config(runs[0][1]).data.name,
             users=len(ds.sequences), rows=rows, commit=evaluate.commit(short=True),
             command=" ".join(["benchmarks/bench_code_structure.py"] + sys.argv[1:]))
  if args.out:
    artifacts.save_json(args.out, out)


if __name__ == "__main__":
  main()
