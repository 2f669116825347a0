#!/usr/bin/env bash
# Reproduce the shipped HalfCheetah checkpoints and their paper-protocol table (docs/RESULTS.md):
# PPO-MAML and the pretrained multi-task baseline on goal velocity and direction, then Finn et al.'s
# evaluation (40 test tasks, 20 rollouts per step, horizon 200, step size 0.1 then 0.05) with the
# random-initialisation baseline, then before/after videos. The iteration counts are the ones the
# shipped runs reached (see each card's "command"); the same seed gives the same policy.
# Usage: scripts/reproduce_locomotion.sh [OUT_DIR]   (default: runs/locomotion; several CPU hours)
set -euo pipefail
out=${1:-runs/locomotion}
cli=${METALEARN_EDU_CLI:-metalearn-edu}
card() { python -c "import json, sys; from metalearn_edu.checkpoints import rl_card; print(rl_card(sys.argv[1], sys.argv[2])['iterations'])" "$1" "$2"; }
for task in vel dir; do
  env=halfcheetah-$task
  for algo in ppo-maml pretrain; do
    $cli train "$env" --algo "$algo" --iterations "$(card "$env" "$algo")" --meta-batch 20 --rollouts 10 --seed 0 \
      --out "$out/$task-$algo" --quiet
  done
  $cli evaluate "$env" --protocol paper --checkpoint "$out/$task-ppo-maml" --baselines --pretrained "$out/$task-pretrain" \
    --out "$out/eval-$task"
  $cli render "$env" --checkpoint "$out/$task-ppo-maml" --out "$out/videos-$task"
done
