#!/usr/bin/env bash
# Every run behind the generated tables of BENCHMARKS.md, in the order we run them. Each line is one
# bench_pipeline.py record in benchmarks/results/; `benchmarks/report.py --write BENCHMARKS.md`
# then rebuilds the tables. On the 2-core development CPU one full dataset run takes ~2 hours, a
# Stage-II-only ablation (--reuse) ~1.5 hours: run a subset with e.g. `bash run_paper_tables.sh main`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/tmp/prorec_runs}
OUT=benchmarks/results
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

ablations() {  # Tables 5/6, Figure 9 on Beauty; upstream stages reused from the main run
  local base=$RUNS/beauty
  abl() { local label=$1; shift; bench --dataset=beauty --label=$label --reuse=$base \
            --workdir=$RUNS/beauty_$label --out=$OUT/ablation_beauty_$label.json "$@"; }
  abl no_ikd --set=generate.ikd=False                      # CKA only
  abl semantic_only --set=align.fusion=semantic_only
  abl collab_only --set=align.fusion=collab_only
  abl concat --set=align.fusion=concat
  abl random_codes --set=codes.method=random
  abl rqvae --set=codes.method=rqvae
  abl k128 --set=codes.k=128
  abl k512 --set=codes.k=512
}

speed() {  # unified vs two codes at equal beam (needs the main Beauty workdir)
  "$PY" benchmarks/bench_unified_vs_dual.py --workdir=$RUNS/beauty \
    --out=$OUT/unified_vs_dual_beauty.json
}

for part in "${@:-main seeds ablations speed}"; do
  for p in $part; do $p; done
done
"$PY" benchmarks/report.py --write BENCHMARKS.md
