"""Markdown tables from the JSON records the benchmark scripts write; no number is typed by hand.

  .venv/bin/python benchmarks/report.py                      # print the tables
  .venv/bin/python benchmarks/report.py --write BENCHMARKS.md  # replace the generated section

Reads ``benchmarks/results/*.json`` (records of bench_pipeline.py: each holds the eval stage's
results.json, per-stage seconds, commit, machine and load). The paper's figures are the only
constants here, labelled as the paper's.
"""
import argparse
import glob
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- report:begin (benchmarks/report.py) -->", "<!-- report:end -->"
# PRORec paper, Table 3 (test split, full ranking).
PAPER = {
    "beauty": {"recall@10": 0.0939, "recall@20": 0.1289, "ndcg@10": 0.0559, "ndcg@20": 0.0646},
    "sports": {"recall@10": 0.0471, "recall@20": 0.0710, "ndcg@10": 0.0259, "ndcg@20": 0.0319},
    "toys": {"recall@10": 0.0822, "recall@20": 0.1154, "ndcg@10": 0.0489, "ndcg@20": 0.0573},
}
DATASETS = ("beauty", "sports", "toys", "yelp")
COLS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def load_records(directory):
  out = []
  for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
    with open(path) as f:
      rec = json.load(f)
    rec["file"] = os.path.basename(path)
    out.append(rec)
  return out


def _mean_std(values):
  m = sum(values) / len(values)
  if len(values) < 2:
    return m, None
  return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _cell(values):
  m, s = _mean_std(values)
  return f"{m:.4f}" if s is None else f"{m:.4f} ± {s:.4f}"


def _table(header, rows):
  """A markdown table: ``header`` is the list of column titles, each row a list of cells."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _epochs(record, missing="-"):
  """Stage II "epochs run (best epoch)" of a pipeline record."""
  tr = record.get("train") or {}
  return f"{tr['epochs']} ({tr['best_epoch']})" if tr else missing


def _finished(records):
  return [r for r in records if (r.get("results") or {}).get("test")]


def main_runs(records, dataset):
  """The default PRORec runs of ``dataset``: no ablation, no override, paper-size model; one per
  seed (a second record of the same seed is an error, not a silent extra sample)."""
  runs = [r for r in _finished(records) if r["dataset"] == dataset and r["label"] == "prorec"
          and not r.get("overrides") and r.get("variant", "paper") == "paper"]
  seen = {}
  for r in runs:
    if r["seed"] in seen:
      raise ValueError(f"{dataset} seed {r['seed']} has two default records: {seen[r['seed']]} "
                       f"and {r['file']}; keep one")
    seen[r["seed"]] = r["file"]
  return runs


BASELINE_LABELS = (
    ("markov_train", "Markov baseline (training part: the models' data)"),
    ("markov", "Markov baseline (test refit with validation interactions)"),
    ("popularity", "popularity baseline (test refit)"))


def _baseline_rows(records, dataset, embedded):
  """Baseline rows from the dataset's bench_baselines.py record, else from a run's data stage."""
  recs = [r for r in records if r.get("kind") == "baselines" and r["dataset"] == dataset]
  if len(recs) > 1:
    raise ValueError(f"{dataset} has two baseline records: {recs[0]['file']} and "
                     f"{recs[1]['file']}; keep one")
  base = recs[-1]["baselines"] if recs else embedded
  commit = recs[-1].get("commit", "-") if recs else "-"
  return [[dataset, label, "-", "-", commit] + [f"{base[m]['test'][c]:.4f}" for c in COLS]
          for m, label in BASELINE_LABELS if m in base]


def main_table(records):
  # Stage II epochs run (best epoch) and the commit per seed: an early-stopped or stale row shows.
  rows = []
  for ds in DATASETS:
    runs = main_runs(records, ds)
    if runs:
      rows.append([ds, "PRORec-JAX (ours)", ", ".join(str(r["seed"]) for r in runs),
                   ", ".join(_epochs(r, "?") for r in runs),
                   ", ".join(sorted({r.get("commit", "?") for r in runs}))] +
                  [_cell([r["results"]["test"][c] for r in runs]) for c in COLS])
    else:
      rows.append([ds, "PRORec-JAX (ours)", "not run", "-", "-"] + ["-"] * len(COLS))
    rows += _baseline_rows(records, ds, runs[0]["results"].get("baselines", {}) if runs else {})
    if ds in PAPER:
      rows.append([ds, "PRORec (paper, Table 3)", "-", "-", "-"] +
                  [f"{PAPER[ds][c]:.4f}" if c in PAPER[ds] else "-" for c in COLS])
  return _table(["dataset", "model", "seeds", "Stage II epochs (best)", "commit", *COLS], rows)


def ablation_table(records, dataset="beauty"):
  runs = [r for r in _finished(records) if r["dataset"] == dataset]
  if not runs:
    return f"No finished {dataset} runs yet."
  # Each run is compared with the run that differs from it in one thing: an ablation with the
  # PRORec run of its seed and overrides (e.g. both with history buckets), an override with the
  # default PRORec run of its seed.
  reference = {(r["seed"], tuple(r.get("overrides", []))): r["results"]["test"]
               for r in runs if r["label"] == "prorec"}
  rows = []
  for r in sorted(runs, key=lambda r: (r["label"] != "prorec", r["label"],
                                       bool(r.get("overrides")), r["seed"])):
    t, v = r["results"]["test"], r["results"]["valid"]
    over = ", ".join(f"`{o}`" for o in r.get("overrides", [])) or "defaults"
    over_key = tuple(r.get("overrides", []))
    ref = reference.get((r["seed"], over_key if r["label"] != "prorec" else ()))
    delta = "-"
    if ref and (r["label"] != "prorec" or over_key):
      delta = " / ".join(f"{100 * (t[c] / ref[c] - 1):+.1f}%" for c in ("recall@10", "ndcg@10"))
    rows.append([r["label"], over, r["seed"], _epochs(r, "reused"), r.get("commit", "?")] +
                [f"{t[c]:.4f}" for c in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")] +
                [f"{v['ndcg@10']:.4f}", delta])
  return _table(["variant", "overrides", "seed", "Stage II epochs (best)", "commit", "test R@10",
                 "test N@10", "test R@20", "test N@20", "valid N@10",
                 "R@10 / N@10 vs reference"], rows)


def _rel(m, s):
  return f"{100 * s / m:.1f}%" if m else "-"


def seed_spread_table(records):
  """Mean ± sample std over seeds for every configuration (dataset, model size, ablation,
  overrides) run with two or more seeds: the noise floor a single-seed comparison has to clear."""
  groups = {}
  for r in _finished(records):
    key = (r["dataset"], r.get("variant", "paper"), r["label"],
           tuple(sorted(r.get("overrides", []))))
    groups.setdefault(key, []).append(r)
  rows = []
  for (ds, variant, label, over), runs in sorted(groups.items()):
    runs = sorted(runs, key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) < 2:
      continue
    if len(set(seeds)) < len(seeds):
      raise ValueError(f"{ds} {label} {list(over)} has two records of one seed: "
                       f"{sorted(r['file'] for r in runs)}; keep one")
    cells = []
    for split, c in (("test", "recall@10"), ("test", "ndcg@10"), ("test", "recall@20"),
                     ("test", "ndcg@20"), ("valid", "ndcg@10")):
      m, s = _mean_std([r["results"][split][c] for r in runs])
      cells.append(f"{m:.4f} ± {s:.4f} ({_rel(m, s)})")
    rows.append([ds, variant, label, ", ".join(f"`{o}`" for o in over) or "defaults",
                 ", ".join(map(str, seeds)), ", ".join(_epochs(r, "reused") for r in runs),
                 ", ".join(r.get("commit", "?") for r in runs)] + cells)
  if not rows:
    return "No configuration has been run with two or more seeds yet."
  return _table(["dataset", "model", "run", "overrides", "seeds", "Stage II epochs (best)",
                 "commits", "test R@10", "test N@10", "test R@20", "test N@20", "valid N@10"],
                rows)


def speed_table(records):
  stages = ("data", "embed", "align", "codes", "train", "eval", "analyze")
  rows = []
  for r in records:
    if r.get("reuse"):  # stages copied from another run: its times are not this run's cost
      continue
    sec = r.get("stage_seconds", {})
    bve = (r.get("results") or {}).get("beam_vs_exhaustive")
    agree = (f"{bve['exact_list_rate']:.3f} / {bve['topk_overlap']:.3f} ({bve['users']})"
             if bve else "-")
    load = "/".join(f"{r[k][0]:.1f}" for k in ("load_before", "load_after") if k in r)
    cells = [f"{sec[s]:.0f} s" if s in sec else "-" for s in stages]
    total = f"**{r.get('total_seconds', 0) / 60:.1f} min**"
    resumed = (r.get("train") or {}).get("resumed_after_epoch")
    if resumed:  # this process ran only the epochs after a restart; the log has them all
      cells[stages.index("train")] += (f" (resumed after epoch {resumed}; all epochs "
                                       f"{r['train']['seconds_all_epochs']:.0f} s)")
      total += " (resumed)"
    rows.append([r["file"]] + cells + [total,
                 f"{r.get('peak_rss_gib', '-')} GiB", _epochs(r), agree, r.get("commit", "?"),
                 load])
  return _table(["record", *stages, "total", "peak RSS", "Stage II epochs (best)",
                 "beam = exhaustive: lists / overlap (users)", "commit", "load before/after"],
                rows)


def dominance_table(records):
  # Without an independent collaborative reference (analyze.collab_workdir = a collab_only run)
  # the reference is this run's own embedding and the shares say nothing: such runs are left out.
  rows = []
  for r in records:
    d = r.get("dominance")
    if not d or not d.get("collab_independent"):
      continue
    s, c = d["sources"]["semantic"], d["sources"]["collaborative"]
    rows.append([r["file"], d["fusion"], d.get("collab_reference", "collab_only run"),
                 f"{s['share']:.2f}", f"{c['share']:.2f}",
                 f"{s['knn_overlap@10']:.3f} / {c['knn_overlap@10']:.3f}"])
  if not rows:
    return ("No records with an independent collaborative reference (`analyze.collab_workdir` = "
            "a collab_only run) yet.")
  return _table(["record", "fusion", "collaborative reference", "semantic share",
                 "collaborative share", "kNN overlap@10 sem / col"], rows)


def dual_table(records):
  recs = [r for r in records if "speedup" in r]
  if not recs:
    return "No unified-vs-dual records yet."
  return _table(
      ["record", "users", "beam", "unified users/s", "dual users/s", "dual / unified time",
       "code storage dual / unified", "commit", "devices"],
      [[r["file"], r["users"], r["beam"], r["unified_users_per_s"], r["dual_users_per_s"],
        f"**{r['speedup']}x**", f"{r['storage_ratio']}x", r["commit"],
        f"{r['devices'][0]} x{len(r['devices'])}"] for r in recs])


def agreement_table(records):
  recs = [r for r in records if r.get("kind") == "beam_agreement"]
  if not recs:
    return "No beam-agreement records yet."
  return _table(
      ["record", "users", "first-level prefixes", "beam", "same top-k list", "top-k overlap"],
      [[r["file"], r["users"], r["first_level_prefixes"], row["beam"],
        f"{row['exact_list_rate']:.3f}", f"{row['topk_overlap']:.3f}"]
       for r in recs for row in r["rows"]])


def stage1_table(records):
  """Stage I's DIN as a recommender itself (align/metrics.json), per run that trained one here."""
  recs = [r for r in records if (r.get("align") or {}).get("test")]
  if not recs:
    return "No Stage I records yet."
  rows = []
  for r in sorted(recs, key=lambda r: (r["dataset"], r["file"])):
    a = r["align"]
    rows.append([r["file"], r["dataset"], a.get("fusion", "?"),
                 f"{a.get('epochs')} ({a.get('best_epoch')})"] +
                [f"{a[split][m]:.4f}" for split in ("test", "valid")
                 for m in ("recall@10", "ndcg@10")] + [a.get("eval_users", "?")])
  return _table(["record", "dataset", "fusion", "epochs (best)", "DIN test R@10", "DIN test N@10",
                 "DIN valid R@10", "DIN valid N@10", "users"], rows)


def fit_gap_table(records):
  recs = [r for r in records if r.get("kind") == "fit_gap"]
  if not recs:
    return "No fit-gap records yet."
  return _table(
      ["record", "workdir", "users", "beam", "split", "R@10", "N@10", "R@20", "N@20"],
      [[r["file"], f"`{r['workdir']}`", r["users"], r["beam"], split] +
       [f"{r['metrics'][split][m]:.4f}" for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")]
       for r in recs for split in ("train", "valid", "test")])


def gap_table(records):
  recs = [r for r in records if r.get("kind") == "gap_breakdown"]
  if not recs:
    return "No gap-breakdown records yet."
  models = ("prorec", "markov", "memory_first", "din")
  rows = []
  for r in recs:
    for bucket, e in r["buckets"].items():
      cells = [f"{e[m]['recall@10']:.4f} / {e[m]['ndcg@10']:.4f}" if m in e else "-"
               for m in models]
      rows.append([r["file"], r["dataset"], bucket, f"{e['share']:.3f}"] + cells)
    o = r["overlap_at10"]
    rows.append([r["file"], r["dataset"], f"hit@10 by both / only PRORec / only Markov / either "
                 f"(memory_first cap {r['memory_first_cap']})", "-",
                 f"{o['both']:.4f} / {o['only_a']:.4f}", f"{o['only_b']:.4f}",
                 f"either {o['either']:.4f}", "-"])
  return _table(["record", "dataset", "test pairs", "share", "PRORec R@10 / N@10",
                 "Markov R@10 / N@10", "memory_first R@10 / N@10", "Stage I DIN R@10 / N@10"],
                rows)


def code_structure_table(records):
  recs = [r for r in records if r.get("kind") == "code_structure"]
  if not recs:
    return "No code-structure records yet."
  rows = []
  for r in recs:
    for row in r["rows"]:
      t, s2 = row["test"], row.get("stage2_test")
      rows.append([r["file"], r["dataset"], row["label"], f"`{row['workdir']}`",
                   f"{row['codes_method']} on {row['codes_input']} ({row['fusion']}"
                   + ("" if row.get("align_current", True) else "; align under an older config")
                   + ")",
                   row["first_level_clusters"],
                   f"{t['level1_bits']:.3f} / {t['chance_bits']:.3f} / "
                   f"**{t['bits_above_chance']:.3f}**",
                   f"{row['valid']['bits_above_chance']:.3f}",
                   f"{t['code_markov']['recall@10']:.4f} / {t['code_markov']['ndcg@10']:.4f}",
                   f"{s2['recall@10']:.4f} / {s2['ndcg@10']:.4f}" if s2 else "-", r["commit"]])
  return _table(["record", "dataset", "run", "workdir", "codes", "first-level clusters",
                 "test level-1 bits / chance / above chance", "valid bits above chance",
                 "code-Markov test R@10 / N@10", "Stage II test R@10 / N@10", "commit"], rows)


def buckets_table(records):
  recs = [r for r in records if r.get("kind") == "history_buckets"]
  if not recs:
    return "No history-bucket records yet."
  rows = []
  for r in recs:
    for name in ("uniform", "bucketed"):
      v = r[name]
      rows.append([r["file"], r["dataset"], name, str(v["widths"]), f"{v['steps_per_s']:.2f}",
                   f"{v['sequences_per_s']:.0f}", v["epoch_steps"],
                   f"{v['projected_epoch_s']:.0f} s",
                   f"**{r['epoch_speedup']:.2f}x**" if name == "bucketed" else "-", r["commit"],
                   "/".join(f"{x:.1f}" for x in r["load"][:1]) if "load" in r else "-"])
  table = _table(["record", "dataset", "batches", "history widths", "steps/s", "sequences/s",
                  "steps per epoch", "projected epoch", "epoch speed-up", "commit", "load"], rows)
  notes = [f"{r['file']}: training histories hold {h['mean']:.1f} of {h['slots']} items on average "
           f"(median {h['median']:.0f}); {h['share_full']:.1%} fill every slot."
           for r in recs for h in [r.get("history_length")] if h]
  return "\n\n".join([table] + notes)


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
      "### Seed spread",
      "Mean ± sample standard deviation over seeds (relative std in brackets) of every "
      "configuration run with more than one seed. The seed changes every stage (Stage I, "
      "k-means, Stage II), so this is the spread of whole pipelines; an ablation that shares its "
      "reference's upstream stages varies less, and the difference of two single-seed runs has "
      "about 1.4 times this spread.", seed_spread_table(records),
      "### Stage I: the DIN alone as a recommender", stage1_table(records),
      "### Wall time per stage", speed_table(records),
      "### Semantic dominance", dominance_table(records),
      "### Unified code vs two codes (inference)", dual_table(all_records),
      "### Beam search vs exhaustive ranking (trained model)", agreement_table(all_records),
      "### Training pairs vs held-out pairs (same users, trained model)",
      fit_gap_table(all_records),
      "### PRORec against the Markov chain by kind of test pair (and memory_first, not in the paper)",
      gap_table(all_records),
      "### Stage II training with history buckets (speed only)", buckets_table(all_records),
      "### What the first code level says about the next item (no Stage II)",
      "Held-out mutual information between the first code token of a test pair's query item and "
      "of its target; the chance level is the same estimate with the items' first tokens "
      "shuffled (cluster sizes kept), and only the bits above it compare code tables. Then a "
      "recommender that knows only first tokens and popularity (`prorec_jax/code_structure.py`),"
      " beside each run's Stage II result when its eval stage is of these codes.",
      code_structure_table(all_records),
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
