#!/usr/bin/env bash
# Every run behind the generated tables of BENCHMARKS.md, in the order we run them. Each line is one
# bench_pipeline.py record in benchmarks/results/; `benchmarks/report.py --write BENCHMARKS.md`
# then rebuilds the tables. On the 2-core development CPU a full Beauty run takes ~1.5 hours (Yelp
# ~3), a Stage-II-only ablation (--reuse) ~1.2 hours, ~50 minutes with history buckets: run a
# subset with e.g. `bash run_paper_tables.sh main`
# (parts: main seeds dominance ablations extensions speed diagnostics buckets seeds_buckets).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/tmp/prorec_runs}
OUT=benchmarks/results
ABLATIONS="no_ikd no_cka semantic_only collab_only concat random_codes rqvae k128 k512"
bench() { "$PY" benchmarks/bench_pipeline.py "$@"; }

main() {  # Table 3 + Yelp: one seed each, full pipeline from scratch (also the per-stage timing)
  for ds in beauty sports toys yelp; do
    bench --dataset=$ds --workdir=$RUNS/$ds --fresh --out=$OUT/pipeline_${ds}_seed0.json
  done
}

seeds() {  # the Beauty row as mean +- std over 3 seeds (seed changes every stage, so no reuse)
  for s in 1 2; do
    bench --dataset=beauty --seed=$s --workdir=$RUNS/beauty_seed$s --fresh \
      --out=$OUT/pipeline_beauty_seed$s.json
  done
}

ablations() {  # Tables 5/6, Figure 9 on Beauty (configs/ablations.py); upstream stages reused
  for name in $ABLATIONS; do
    bench --dataset=beauty --ablation=$name --reuse=$RUNS/beauty --workdir=$RUNS/beauty_$name \
      --out=$OUT/ablation_beauty_$name.json
  done
}

dominance() {  # Table 4 and the Stage I table: an independent collab_only DIN as the reference
  local B="bench --dataset=beauty --reuse=$RUNS/beauty"
  $B --ablation=collab_only --stages=align --workdir=$RUNS/beauty_collab_only \
    --out=$OUT/stage1_beauty_collab_only.json
  $B --stages=analyze --set=analyze.collab_workdir=$RUNS/beauty_collab_only \
    --workdir=$RUNS/beauty_dominance --out=$OUT/dominance_beauty_prorec.json
  $B --ablation=concat --stages=align,analyze --set=analyze.collab_workdir=$RUNS/beauty_collab_only \
    --workdir=$RUNS/beauty_concat --out=$OUT/dominance_beauty_concat.json
}

diagnostics() {  # does Stage II fit its own training pairs? where does Markov beat it? (main runs)
  "$PY" benchmarks/bench_fit_gap.py --workdir=$RUNS/beauty --out=$OUT/fit_gap_beauty.json
  for ds in beauty sports toys yelp; do
    "$PY" benchmarks/bench_baselines.py --workdir=$RUNS/$ds --out=$OUT/baselines_$ds.json
    "$PY" benchmarks/bench_gap_breakdown.py --workdir=$RUNS/$ds --din --out=$OUT/gap_breakdown_$ds.json
  done
}

extensions() {  # not in the paper: Stage II also sees history item ids (README, Stage II)
  bench --dataset=beauty --reuse=$RUNS/beauty --stages=train,eval \
    --set=generate.history_item_ids=true --workdir=$RUNS/beauty_itemids \
    --out=$OUT/extension_beauty_itemids.json
}

speed() {  # unified vs two codes at equal beam; history buckets (needs the main Beauty workdir)
  "$PY" benchmarks/bench_unified_vs_dual.py --workdir=$RUNS/beauty \
    --out=$OUT/unified_vs_dual_beauty.json
  "$PY" benchmarks/bench_history_buckets.py --workdir=$RUNS/beauty --buckets=4,8,12 --steps=100 \
    --out=$OUT/history_buckets_beauty.json
}

buckets() {  # not in the paper: Stage II with history buckets, then the ablations under them
  local B=(--dataset=beauty --reuse=$RUNS/beauty "--set=generate.optim.history_buckets=[4,8,12]")
  bench "${B[@]}" --stages=train,eval --workdir=$RUNS/beauty_buckets \
    --out=$OUT/ablation_beauty_buckets.json
  for name in $ABLATIONS; do  # stages whose config is unchanged skip (reused from $RUNS/beauty)
    bench "${B[@]}" --ablation=$name --stages=align,codes,train,eval \
      --workdir=$RUNS/beauty_${name}_buckets --out=$OUT/ablation_beauty_${name}_buckets.json
  done
}

seeds_buckets() {  # the seed spread under the buckets, against which the bucketed ablations read
  for s in 1 2; do  # seed 0 is the buckets part's reference run
    bench --dataset=beauty --seed=$s --reuse=$RUNS/beauty "--set=generate.optim.history_buckets=[4,8,12]" \
      --workdir=$RUNS/beauty_buckets_seed$s --out=$OUT/pipeline_beauty_buckets_seed$s.json
  done
}

for part in "${@:-main seeds dominance ablations extensions speed diagnostics buckets seeds_buckets}"; do
  for p in $part; do $p; done
done
"$PY" benchmarks/report.py --write BENCHMARKS.md
