"""Diagnostic tables (not in the paper) that locate the gap: Stage I alone, beam agreement, fit
gap, the gap by kind of test pair, code structure, history buckets."""
import report_common as rc


def agreement_table(records):
  recs = [r for r in records if r.get("kind") == "beam_agreement"]
  if not recs:
    return "No beam-agreement records yet."
  return rc.table(
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
  return rc.table(["record", "dataset", "fusion", "epochs (best)", "DIN test R@10", "DIN test N@10",
                 "DIN valid R@10", "DIN valid N@10", "users"], rows)


def fit_gap_table(records):
  recs = [r for r in records if r.get("kind") == "fit_gap"]
  if not recs:
    return "No fit-gap records yet."
  return rc.table(
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
  return rc.table(["record", "dataset", "test pairs", "share", "PRORec R@10 / N@10",
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
  return rc.table(["record", "dataset", "run", "workdir", "codes", "first-level clusters",
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
  table = rc.table(["record", "dataset", "batches", "history widths", "steps/s", "sequences/s",
                  "steps per epoch", "projected epoch", "epoch speed-up", "commit", "load"], rows)
  notes = [f"{r['file']}: training histories hold {h['mean']:.1f} of {h['slots']} items on average "
           f"(median {h['median']:.0f}); {h['share_full']:.1%} fill every slot."
           for r in recs for h in [r.get("history_length")] if h]
  return "\n\n".join([table] + notes)
