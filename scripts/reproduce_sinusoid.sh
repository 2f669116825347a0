#!/usr/bin/env bash
# Reproduce Finn et al. 2017 Table 2 (sinusoid, trained 10-shot, evaluated 5-shot on 600 tasks)
# for MAML, the pretrained baseline, FOMAML and Reptile, then the speed benchmark.
# Usage: scripts/reproduce_sinusoid.sh [OUT_DIR] [ITERATIONS]   (defaults: runs/table2, 70000)
set -euo pipefail
out=${1:-runs/table2}
iters=${2:-70000}
cli=${METALEARN_EDU_CLI:-metalearn-edu}
for algo in maml pretrain fomaml reptile; do
  start=$(date +%s)
  $cli train sinusoid --algo "$algo" --iterations "$iters" --seed 0 --out "$out/$algo" --quiet
  echo "$algo: meta-training wall-clock $(( $(date +%s) - start )) s" | tee -a "$out/timings.txt"
  $cli evaluate sinusoid --checkpoint "$out/$algo/checkpoint.pt" --shots 5 --steps 1 5 10 --tasks 600 --seed 0 --out "$out/$algo"
done
$cli bench maml --out "$out"
