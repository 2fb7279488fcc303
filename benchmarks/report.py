"""Markdown tables from the JSON records the benchmark scripts write; no number is typed by hand.

  .venv/bin/python benchmarks/report.py                      # print the tables
  .venv/bin/python benchmarks/report.py --write BENCHMARKS.md  # replace the generated section

Reads ``benchmarks/results/*.json`` (records of bench_pipeline.py: each holds the eval stage's
results.json, per-stage seconds, commit, machine and load). The paper's figures are the only
constants here, labelled as the paper's.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the table modules beside this script, also when tests import it by path
import report_diagnostics as diag  # noqa: E402
from report_common import load_records  # noqa: E402
from report_paper import (ablation_table, dominance_table, dual_table, main_table,  # noqa: E402
                          quantizer_table, seed_spread_table, speed_table)

BEGIN, END = "<!-- report:begin (benchmarks/report.py) -->", "<!-- report:end -->"


def render(all_records):
  records = [r for r in all_records if "stage_seconds" in r]  # bench_pipeline.py records
  baseline_records = [r for r in all_records if r.get("kind") == "baselines"]
  machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores, JAX "
                     f"{r['machine']['jax']}" for r in records if "machine" in r})
  commands = "\n".join(f"    {r['command']}" for r in all_records if "command" in r)
  return "\n\n".join([
      BEGIN,
      "Generated from `benchmarks/results/*.json` by `benchmarks/report.py --write BENCHMARKS.md`;"
      " do not edit by hand. Machines: " + ("; ".join(machines) or "-") + ".",
      "Commands that produced the records:\n\n" + (commands or "    (none yet)"),
      "### Main table (test split, model chosen on validation)",
      main_table(records + baseline_records),
      "### Runs on Beauty (defaults and ablations)",
      "The last column compares a run with the one it differs from in one thing: an ablation with "
      "the PRORec run of the same seed and overrides, a PRORec run with overrides with the default "
      "run of its seed (relative change of test R@10 / N@10).", ablation_table(records),
      "### Quantizer and codebook size (Figure 9)",
      "Each run is compared with the K=256 hierarchical k-means run of the same seed and "
      "overrides; both build their codes from a seed-0 Stage I of the same config, reused by "
      "`--reuse` (a record's `upstream` digests, where present, tell whether the arrays were "
      "bit-identical). K is the codebook size per level; RQ-VAE's codes are longer (3 levels "
      "and a collision suffix), so its Stage II costs more per epoch.",
      quantizer_table(records),
      "### Seed spread",
      "Mean ± sample standard deviation over seeds (relative std in brackets) of every "
      "configuration run with more than one seed. The seed changes every stage (Stage I, "
      "k-means, Stage II), so this is the spread of whole pipelines; an ablation that shares its "
      "reference's upstream stages varies less, and the difference of two single-seed runs has "
      "about 1.4 times this spread.", seed_spread_table(records),
      "### Stage I: the DIN alone as a recommender", diag.stage1_table(records),
      "### Wall time per stage", speed_table(records),
      "### Semantic dominance", dominance_table(records),
      "### Unified code vs two codes (inference)", dual_table(all_records),
      "### Beam search vs exhaustive ranking (trained model)", diag.agreement_table(all_records),
      "### Training pairs vs held-out pairs (same users, trained model)",
      diag.fit_gap_table(all_records),
      "### PRORec against the Markov chain by kind of test pair (and memory_first, not in the paper)",
      diag.gap_table(all_records),
      "### Stage II training with history buckets (speed only)", diag.buckets_table(all_records),
      "### What the first code level says about the next item (no Stage II)",
      "Held-out mutual information between the first code token of a test pair's query item and "
      "of its target; the chance level is the same estimate with the items' first tokens "
      "shuffled (cluster sizes kept), and only the bits above it compare code tables. Then a "
      "recommender that knows only first tokens and popularity (`prorec_jax/code_structure.py`),"
      " beside each run's Stage II result when its eval stage is of these codes.",
      diag.code_structure_table(all_records),
      END])


def write(path, text):
  with open(path) as f:
    doc = f.read()
  if BEGIN in doc and END in doc:
    doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
  else:
    doc = doc.rstrip("\n") + "\n\n## Pipeline runs (generated)\n\n" + text + "\n"
  with open(path, "w") as f:
    f.write(doc)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", default=os.path.join(HERE, "results"))
  parser.add_argument("--write", help="markdown file whose generated section is replaced")
  args = parser.parse_args()
  text = render(load_records(args.results))
  if args.write:
    write(args.write, text)
  else:
    print(text)


if __name__ == "__main__":
  main()
