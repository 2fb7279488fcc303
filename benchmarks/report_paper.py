"""The tables that answer the paper: main table, ablations, seed spread, wall time, dominance,
unified vs two codes."""
import report_common as rc

# PRORec paper, Table 3 (test split, full ranking).
PAPER = {
    "beauty": {"recall@10": 0.0939, "recall@20": 0.1289, "ndcg@10": 0.0559, "ndcg@20": 0.0646},
    "sports": {"recall@10": 0.0471, "recall@20": 0.0710, "ndcg@10": 0.0259, "ndcg@20": 0.0319},
    "toys": {"recall@10": 0.0822, "recall@20": 0.1154, "ndcg@10": 0.0489, "ndcg@20": 0.0573},
}
DATASETS = ("beauty", "sports", "toys", "yelp")
COLS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


# Overrides that change only which training users share a Stage II batch, not the model, its
# data or its budget (tests/test_generate.py::test_history_buckets_drop_only_padding): their runs
# are PRORec runs of the paper's model and get their own rows in the main table.
BATCHING_ONLY = ("generate.optim.history_buckets=",)


def _prorec_runs(records, dataset, labels=("prorec",)):
  """Finished runs of ``dataset`` with the paper-size model, PRORec (no ablation) by default."""
  return [r for r in rc.finished(records) if r["dataset"] == dataset and r["label"] in labels
          and r.get("variant", "paper") == "paper"]


def main_runs(records, dataset, overrides=()):
  """The PRORec runs of ``dataset`` with exactly ``overrides`` (default: none), no ablation,
  paper-size model; one per seed (a second record of a seed is an error, not an extra sample)."""
  want = sorted(overrides)
  runs = [r for r in _prorec_runs(records, dataset) if sorted(r.get("overrides", [])) == want]
  seen = {}
  for r in runs:
    if r["seed"] in seen:
      kind = "default" if not want else "`" + ", ".join(want) + "`"
      raise ValueError(f"{dataset} seed {r['seed']} has two {kind} records: {seen[r['seed']]} "
                       f"and {r['file']}; keep one")
    seen[r["seed"]] = r["file"]
  return sorted(runs, key=lambda r: r["seed"])


def batching_configs(records, dataset):
  """The override sets of ``dataset``'s PRORec runs whose every override is batching-only."""
  return sorted({tuple(sorted(r["overrides"])) for r in _prorec_runs(records, dataset)
                 if r.get("overrides")
                 and all(o.startswith(BATCHING_ONLY) for o in r["overrides"])})


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


def _run_row(dataset, model, runs):
  # Stage II epochs run (best epoch) and the commit per seed: an early-stopped or stale row shows.
  return ([dataset, model, ", ".join(str(r["seed"]) for r in runs),
           ", ".join(rc.epochs(r, "?") for r in runs),
           ", ".join(sorted({r.get("commit", "?") for r in runs}))] +
          [rc.cell([r["results"]["test"][c] for r in runs]) for c in COLS])


def main_table(records):
  rows = []
  for ds in DATASETS:
    runs = main_runs(records, ds)
    if runs:
      rows.append(_run_row(ds, "PRORec-JAX (ours)", runs))
    else:
      rows.append([ds, "PRORec-JAX (ours)", "not run", "-", "-"] + ["-"] * len(COLS))
    for over in batching_configs(records, ds):
      rows.append(_run_row(ds, "PRORec-JAX (ours), " + ", ".join(f"`{o}`" for o in over),
                           main_runs(records, ds, over)))
    rows += _baseline_rows(records, ds, runs[0]["results"].get("baselines", {}) if runs else {})
    if ds in PAPER:
      rows.append([ds, "PRORec (paper, Table 3)", "-", "-", "-"] +
                  [f"{PAPER[ds][c]:.4f}" if c in PAPER[ds] else "-" for c in COLS])
  return rc.table(["dataset", "model", "seeds", "Stage II epochs (best)", "commit", *COLS], rows)


def ablation_table(records, dataset="beauty"):
  runs = [r for r in rc.finished(records) if r["dataset"] == dataset]
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
    rows.append([r["label"], over, r["seed"], rc.epochs(r, "reused"), r.get("commit", "?")] +
                [f"{t[c]:.4f}" for c in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")] +
                [f"{v['ndcg@10']:.4f}", delta])
  return rc.table(["variant", "overrides", "seed", "Stage II epochs (best)", "commit", "test R@10",
                 "test N@10", "test R@20", "test N@20", "valid N@10",
                 "R@10 / N@10 vs reference"], rows)


# Figure 9: the quantizer, and hierarchical k-means' first-level K (prorec: K=256, the reference).
FIGURE9 = (("random_codes", "random"), ("rqvae", "RQ-VAE"), ("k128", "hierarchical k-means"),
           ("prorec", "hierarchical k-means"), ("k512", "hierarchical k-means"))


def quantizer_table(records, dataset="beauty"):
  """Figure 9 side by side: each quantizer/K run beside the PRORec run of the same seed and
  overrides (the only thing that differs is the code table), with its code length and cost."""
  names = dict(FIGURE9)
  by_key = {}
  for r in _prorec_runs(records, dataset, names):
    by_key.setdefault((r["seed"], tuple(sorted(r.get("overrides", [])))), {})[r["label"]] = r
  rows = []
  for (seed, over), group in sorted(by_key.items()):
    ref = group.get("prorec")
    if len(group) < 2 or not ref:  # a quantizer run needs its K=256 reference to compare with
      continue
    for label, quantizer in FIGURE9:
      r = group.get(label)
      if r is None:
        continue
      t, res = r["results"]["test"], r["results"]
      delta = "-" if r is ref else " / ".join(
          f"{100 * (t[c] / ref['results']['test'][c] - 1):+.1f}%" for c in ("recall@10", "ndcg@10"))
      train = (r.get("train") or {}).get("seconds_all_epochs") or r["stage_seconds"].get("train")
      rows.append([quantizer, res.get("k", "?"), res.get("code_length", "?"), seed,
                   ", ".join(f"`{o}`" for o in over) or "defaults", rc.epochs(r)] +
                  [f"{t[c]:.4f}" for c in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")] +
                  [delta, f"{train / 60:.0f} min" if train else "-", r.get("commit", "?")])
  if not rows:
    return f"No {dataset} quantizer or K run beside its K=256 reference yet."
  return rc.table(["quantizer", "K", "code length", "seed", "overrides", "Stage II epochs (best)",
                   "test R@10", "test N@10", "test R@20", "test N@20",
                   "R@10 / N@10 vs K=256", "Stage II time", "commit"], rows)


def seed_spread_table(records):
  """Mean ± sample std over seeds for every configuration (dataset, model size, ablation,
  overrides) run with two or more seeds: the noise floor a single-seed comparison has to clear."""
  groups = {}
  for r in rc.finished(records):
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
      m, s = rc.mean_std([r["results"][split][c] for r in runs])
      cells.append(f"{m:.4f} ± {s:.4f} ({rc.rel(m, s)})")
    rows.append([ds, variant, label, ", ".join(f"`{o}`" for o in over) or "defaults",
                 ", ".join(map(str, seeds)), ", ".join(rc.epochs(r, "reused") for r in runs),
                 ", ".join(r.get("commit", "?") for r in runs)] + cells)
  if not rows:
    return "No configuration has been run with two or more seeds yet."
  return rc.table(["dataset", "model", "run", "overrides", "seeds", "Stage II epochs (best)",
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
                 f"{r.get('peak_rss_gib', '-')} GiB", rc.epochs(r), agree, r.get("commit", "?"),
                 load])
  return rc.table(["record", *stages, "total", "peak RSS", "Stage II epochs (best)",
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
  return rc.table(["record", "fusion", "collaborative reference", "semantic share",
                 "collaborative share", "kNN overlap@10 sem / col"], rows)


def dual_table(records):
  recs = [r for r in records if "speedup" in r]
  if not recs:
    return "No unified-vs-dual records yet."
  return rc.table(
      ["record", "users", "beam", "unified users/s", "dual users/s", "dual / unified time",
       "code storage dual / unified", "commit", "devices"],
      [[r["file"], r["users"], r["beam"], r["unified_users_per_s"], r["dual_users_per_s"],
        f"**{r['speedup']}x**", f"{r['storage_ratio']}x", r["commit"],
        f"{r['devices'][0]} x{len(r['devices'])}"] for r in recs])
