"""benchmarks/report.py: tables come from the records (mean/std over seeds), and --write replaces
only its own section."""
import json

import pytest

from conftest import load_script

report = load_script("benchmarks/report.py")  # puts benchmarks/ on sys.path
import report_paper as paper  # noqa: E402


def _record(seed, r10, label="prorec", reuse=""):
  m = {c: 0.1 for c in paper.COLS}
  m["recall@10"] = r10
  return dict(dataset="beauty", label=label, seed=seed, reuse=reuse, overrides=[], commit="abc",
              machine=dict(cpu="cpu", cores=2, jax="0"), stage_seconds={"train": 60.0},
              total_seconds=120.0, command=f"bench --seed={seed}",
              results=dict(test=m, valid=m, baselines={}), train=dict(epochs=8, best_epoch=6))


def test_main_row_is_mean_and_std_over_seeds(tmp_path):
  for seed, r10 in ((0, 0.08), (1, 0.10), (2, 0.12)):
    (tmp_path / f"s{seed}.json").write_text(json.dumps(_record(seed, r10)))
  (tmp_path / "abl.json").write_text(json.dumps(_record(0, 0.5, "no_ikd", reuse="/w")))
  text = report.render(report.load_records(str(tmp_path)))
  row = next(l for l in text.splitlines() if l.startswith("| beauty | PRORec-JAX"))
  assert "| 0, 1, 2 | 8 (6), 8 (6), 8 (6) | abc |" in row  # seeds, epochs (best), commit
  assert "0.1000 ± 0.0200" in row  # the ablation is not averaged in
  assert "| no_ikd |" in text and "0.5000" in text
  speed_rows = [l for l in text.splitlines() if l.startswith("| s") or l.startswith("| abl")]
  assert len([l for l in speed_rows if "min**" in l]) == 3  # reused-stage run left out of timing


def test_write_replaces_only_the_generated_section(tmp_path):
  doc = tmp_path / "B.md"
  doc.write_text(f"# Head\n\n{report.BEGIN}\nold\n{report.END}\n\n## Tail\n")
  report.write(str(doc), f"{report.BEGIN}\nnew\n{report.END}")
  text = doc.read_text()
  assert "old" not in text and "new" in text and text.startswith("# Head") and "## Tail" in text


def test_main_row_takes_only_default_runs_once_per_seed(tmp_path):
  over = _record(1, 0.9)
  over["overrides"] = ["generate.ikd=False"]
  recs = [dict(_record(0, 0.08), file="a.json"), dict(over, file="b.json")]
  assert [r["file"] for r in paper.main_runs(recs, "beauty")] == ["a.json"]
  with pytest.raises(ValueError, match="two default records"):
    paper.main_runs(recs + [dict(_record(0, 0.09), file="c.json")], "beauty")


def test_fit_gap_table_has_a_row_per_split(tmp_path):
  m = {c: 0.0 for c in paper.COLS}
  rec = dict(kind="fit_gap", workdir="/w", users=8, beam=20, commit="abc", command="bench_fit_gap",
             metrics={"train": dict(m, **{"recall@10": 0.13}), "valid": m, "test": m})
  (tmp_path / "fit.json").write_text(json.dumps(rec))
  text = report.render(report.load_records(str(tmp_path)))
  rows = [l for l in text.splitlines() if l.startswith("| fit.json |")]
  assert [r.split(" | ")[4] for r in rows] == ["train", "valid", "test"]
  assert "0.1300" in rows[0] and "0.1300" not in rows[1]


def test_stage1_table_lists_runs_that_trained_a_din(tmp_path):
  m = {c: 0.0 for c in paper.COLS}
  din = dict(_record(0, 0.08), align=dict(fusion="collab_only", epochs=5, best_epoch=3,
                                          eval_users=64, test=dict(m, **{"recall@10": 0.0547}),
                                          valid=m))
  (tmp_path / "din.json").write_text(json.dumps(din))
  (tmp_path / "nodin.json").write_text(json.dumps(_record(1, 0.08)))
  text = report.render(report.load_records(str(tmp_path)))
  rows = [l for l in text.splitlines() if "| collab_only |" in l]
  assert len(rows) == 1 and rows[0].startswith("| din.json |") and "| 5 (3) | 0.0547 |" in rows[0]


def test_gap_table_has_a_row_per_bucket_and_the_overlap(tmp_path):
  m = {"recall@10": 0.25, "ndcg@10": 0.125}
  buckets = {b: dict(users=4, share=0.25, prorec=m, markov=m) for b in ("all", "seen_transition")}
  buckets["cold_target"] = dict(users=0, share=0.0)
  rec = dict(kind="gap_breakdown", dataset="toys", buckets=buckets, memory_first_cap=3,
             overlap_at10=dict(both=0.1, only_a=0.2, only_b=0.3, either=0.6), command="bench_gap")
  (tmp_path / "gap.json").write_text(json.dumps(rec))
  text = report.render(report.load_records(str(tmp_path)))
  rows = [l for l in text.splitlines() if l.startswith("| gap.json |")]
  assert [r.split(" | ")[2] for r in rows[:3]] == ["all", "seen_transition", "cold_target"]
  assert "| 0.2500 / 0.1250 | 0.2500 / 0.1250 | - | - |" in rows[0]
  assert "| - | - | - | - |" in rows[2] and "either 0.6000" in rows[3] and "cap 3" in rows[3]


def test_main_table_takes_baselines_from_their_own_record(tmp_path):
  m = {c: 0.1 for c in paper.COLS}
  run = _record(0, 0.06)
  run["results"]["baselines"] = dict(markov=dict(test=dict(m, **{"recall@10": 0.0753})))
  (tmp_path / "run.json").write_text(json.dumps(run))
  rows = lambda: [l for l in report.render(report.load_records(str(tmp_path))).splitlines()  # noqa
                  if l.startswith("| beauty |") and "baseline" in l]
  assert len(rows()) == 1 and "refit" in rows()[0] and "0.0753" in rows()[0]
  base = dict(kind="baselines", dataset="beauty", commit="b1", baselines=dict(
      markov=dict(test=dict(m, **{"recall@10": 0.0753})),
      markov_train=dict(test=dict(m, **{"recall@10": 0.0659})), popularity=dict(test=m)))
  (tmp_path / "base.json").write_text(json.dumps(base))
  got = rows()
  assert len(got) == 3 and "training part" in got[0] and "0.0659" in got[0] and "| b1 |" in got[0]
  (tmp_path / "base2.json").write_text(json.dumps(base))
  with pytest.raises(ValueError, match="two baseline records"):
    rows()


def test_runs_are_compared_with_the_run_that_differs_in_one_thing(tmp_path):
  runs = [_record(0, 0.10), _record(0, 0.08), _record(0, 0.06, "no_ikd"), _record(1, 0.05, "k128")]
  runs[1]["overrides"] = runs[2]["overrides"] = ["generate.optim.history_buckets=[4,8,12]"]
  for i, r in enumerate(runs):
    (tmp_path / f"r{i}.json").write_text(json.dumps(r))
  table = paper.ablation_table(report.load_records(str(tmp_path)))
  no_ikd = next(l for l in table.splitlines() if l.startswith("| no_ikd"))
  assert no_ikd.endswith("| -25.0% / +0.0% |")  # against 0.08 (bucketed), not 0.10 (default)
  bucketed = next(l for l in table.splitlines() if "| 0.0800 |" in l and l.startswith("| prorec"))
  assert bucketed.endswith("| -20.0% / +0.0% |")  # an override against the default run
  default = next(l for l in table.splitlines() if "| 0.1000 |" in l)
  assert default.endswith("| - |")
  k128 = next(l for l in table.splitlines() if l.startswith("| k128"))
  assert k128.endswith("| - |")  # no PRORec run of seed 1: no comparison


def test_buckets_table_shows_both_batchings_and_the_speedup(tmp_path):
  def side(widths, sps, epoch_s):
    return dict(widths=widths, steps_per_s=sps, sequences_per_s=sps * 256, epoch_steps=500,
                projected_epoch_s=epoch_s)
  rec = dict(kind="history_buckets", dataset="beauty", commit="abc", load=[1.0, 1.0, 1.0],
             command="bench_history_buckets", uniform=side([20], 2.0, 250.0),
             bucketed=side([4, 20], 3.0, 160.0), epoch_speedup=250.0 / 160.0)
  (tmp_path / "hb.json").write_text(json.dumps(rec))
  rows = [l for l in report.render(report.load_records(str(tmp_path))).splitlines()
          if l.startswith("| hb.json |")]
  assert [r.split(" | ")[2] for r in rows] == ["uniform", "bucketed"]
  assert "**1.56x**" in rows[1] and "250 s" in rows[0] and "[4, 20]" in rows[1]
  rec["history_length"] = dict(mean=6.7, median=4.0, share_full=0.115, slots=20)
  (tmp_path / "hb.json").write_text(json.dumps(rec))
  text = report.render(report.load_records(str(tmp_path)))
  assert "hb.json: training histories hold 6.7 of 20 items on average (median 4); 11.5% fill" in text


def test_speed_table_marks_a_resumed_train_stage(tmp_path):
  rec = _record(0, 0.06)
  rec["train"].update(resumed_after_epoch=12, seconds_all_epochs=4000.0)
  (tmp_path / "r.json").write_text(json.dumps(rec))
  (tmp_path / "s.json").write_text(json.dumps(_record(1, 0.06)))
  rows = {l.split(" | ")[0]: l for l in report.render(report.load_records(str(tmp_path))).splitlines()
          if l.startswith("| r.json |") or l.startswith("| s.json |")}
  assert "60 s (resumed after epoch 12; all epochs 4000 s)" in rows["| r.json"]
  assert "(resumed)" in rows["| r.json"] and "resumed" not in rows["| s.json"]


def test_seed_spread_groups_runs_by_configuration(tmp_path):
  buck = ["generate.optim.history_buckets=[4,8,12]"]
  recs = [dict(_record(s, r10), file=f"b{s}.json", overrides=buck)
          for s, r10 in ((0, 0.05), (1, 0.06), (2, 0.07))]
  recs += [dict(_record(0, 0.5), file="d0.json"),  # a single seed: no spread row
           dict(_record(0, 0.2, "no_ikd"), file="n0.json", overrides=buck)]
  text = paper.seed_spread_table(recs)
  rows = [l for l in text.splitlines() if l.startswith("| beauty")]
  assert len(rows) == 1 and "| 0, 1, 2 |" in rows[0] and "history_buckets" in rows[0]
  assert "| paper | prorec |" in rows[0] and "| abc, abc, abc |" in rows[0]
  assert "0.0600 ± 0.0100 (16.7%)" in rows[0]
  with pytest.raises(ValueError, match="two records of one seed"):
    paper.seed_spread_table(recs + [dict(_record(1, 0.06), file="x.json", overrides=buck)])
  assert "No configuration" in paper.seed_spread_table(recs[:1])


def test_code_structure_table_has_a_row_per_run(tmp_path):
  m = {c: 0.05 for c in paper.COLS}
  side = dict(level1_bits=0.7, chance_bits=0.2, bits_above_chance=0.5, code_markov=m)
  row = dict(label="prorec", workdir="/w", fusion="prorec", codes_method="hkm",
             codes_input="integrated", first_level_clusters=256, valid=side, test=side)
  rec = dict(kind="code_structure", dataset="beauty", users=9, commit="abc", command="bench",
             rows=[dict(row, stage2_test=dict(m, **{"recall@10": 0.06})),
                   dict(row, label="mapped")])
  (tmp_path / "cs.json").write_text(json.dumps(rec))
  text = report.render(report.load_records(str(tmp_path)))
  rows = [l for l in text.splitlines() if l.startswith("| cs.json")]
  assert len(rows) == 2 and "0.0600 / 0.0500" in rows[0] and rows[1].endswith("| - | abc |")
  assert "0.700 / 0.200 / **0.500**" in rows[0]


def test_main_table_gives_batching_only_runs_their_own_row():
  buck = ["generate.optim.history_buckets=[4,8,12]"]
  recs = [dict(_record(0, 0.06), file="d0.json")]
  recs += [dict(_record(s, r10), file=f"b{s}.json", overrides=buck)
           for s, r10 in ((2, 0.07), (0, 0.05), (1, 0.06))]
  recs += [dict(_record(0, 0.9), file="e.json", overrides=buck + ["generate.optim.max_epochs=64"]),
           dict(_record(0, 0.8, "no_ikd"), file="n.json", overrides=buck)]
  rows = [l for l in paper.main_table(recs).splitlines() if l.startswith("| beauty | PRORec-JAX")]
  assert len(rows) == 2  # a longer budget or an ablation is not a main-table run
  assert "| 0 |" in rows[0] and "0.0600 |" in rows[0] and "±" not in rows[0].split(" | ")[6]
  assert "history_buckets" in rows[1] and "| 0, 1, 2 |" in rows[1]
  assert "0.0600 ± 0.0100" in rows[1] and "0.9000" not in rows[1] and "0.8000" not in rows[1]
  with pytest.raises(ValueError, match="two `generate.optim.history_buckets"):
    paper.main_table(recs + [dict(_record(1, 0.06), file="x.json", overrides=buck)])


def test_quantizer_table_compares_each_code_table_with_its_k256_reference():
  def run(label, r10, k, length, overrides=("b=1",)):
    rec = dict(_record(0, r10, label), overrides=list(overrides))
    rec["results"].update(k=k, code_length=length)
    return rec
  recs = [run("k512", 0.05, 512, 2), run("prorec", 0.10, 256, 2), run("rqvae", 0.12, 256, 4),
          run("prorec", 0.20, 256, 2, ()),  # another reference: must not be compared with
          run("k128", 0.07, 128, 2, ("b=2",)),  # no reference under its overrides: left out
          run("no_ikd", 0.09, 256, 2)]  # not a quantizer ablation
  rows = [l.strip("| ").split(" | ") for l in paper.quantizer_table(recs).splitlines()[2:]]
  assert [(r[0], r[1], r[2]) for r in rows] == [
      ("RQ-VAE", "256", "4"), ("hierarchical k-means", "256", "2"),
      ("hierarchical k-means", "512", "2")]
  assert [r[10] for r in rows] == ["+20.0% / +0.0%", "-", "-50.0% / +0.0%"]
  assert paper.quantizer_table(recs[3:]).startswith("No beauty")  # nothing comparable: no table
