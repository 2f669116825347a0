#!/usr/bin/env bash
# Reproduce the 2D navigation table of docs/RESULTS.md: PPO-MAML (5 seeds: two inner steps in training, the
# KL guard, an annealed outer step and GAE lambda 0.95 in every advantage), MAML-VPG, MAML-TRPO and PPO-inner
# (3 seeds each), the pretrained multi-task baseline, then Finn et al.'s protocol (40 test tasks, 20 rollouts
# per step, step size 0.1 then 0.05) on each run's best.pt, with the random-initialisation baseline and the exact
# oracle, and again on the last checkpoints. PPO-MAML adapts with the advantages it was meta-trained with
# (--gae-lambda 0.95, so --protocol custom with the paper's other values); the others with Finn et al.'s (lambda 1).
# Then, for the PPO-MAML seeds, where each return comes from (evaluate --diagnose); every run adapted on
# the 4000-step batches of Finn et al.'s released test script (evaluate --batch-steps 4000). Last, the configuration
# at or above Finn et al. in the expected reading (a 32-32 network, sigma held at 0.040, the multi-step loss; seeds
# 10-14, as in RESULTS' twentieth session), read on 4000 test tasks (100 draws of the protocol's 40) with task seeds
# 101 and 100 and ten times on the fixed 40, and every other algorithm read on the same 4000 tasks.
# Every run has a fixed iteration count that fits in 15 minutes (5 for pretrain) on the 2-core CPU of RESULTS,
# one training per core; MAML-TRPO's is the count its 15 minutes reached. A run is deterministic per
# iteration, so the same counts give the same policies on any machine.
# Usage: scripts/reproduce_navigation.sh [OUT_DIR]   (default: runs/navigation; about 4.7 h on one core,
# run the trainings two at a time by hand to halve it)
set -euo pipefail
out=${1:-runs/navigation}
cli=${METALEARN_EDU_CLI:-metalearn-edu}
train() { $cli train navigation2d --quiet "$@"; }
# PPO-MAML's adaptation rule: the paper protocol's values, with the GAE lambda it was meta-trained with
ppo_protocol=(--protocol custom --horizon 100 --gae-lambda 0.95)
ppo_last=() ppo_best=()  # the PPO-MAML run folders (last checkpoints) and their best.pt files
for seed in 0 1 2 3 4; do
  train --algo ppo-maml --inner-steps 2 --kl-stop 0.05 --anneal-lr --gae-lambda 0.95 --iterations 350 --seed "$seed" --out "$out/ppo-maml-seed$seed"
  ppo_last+=("$out/ppo-maml-seed$seed") && ppo_best+=("$out/ppo-maml-seed$seed/best.pt")
done
for seed in 0 1 2; do
  train --algo maml-vpg --anneal-lr --iterations 2000 --seed "$seed" --out "$out/maml-vpg-seed$seed"
  train --algo maml-trpo --iterations 186 --seed "$seed" --out "$out/maml-trpo-seed$seed"
  train --algo ppo-inner --anneal-lr --iterations 1000 --seed "$seed" --out "$out/ppo-inner-seed$seed"
done
train --algo pretrain --anneal-lr --iterations 1800 --seed 0 --out "$out/pretrain-seed0"
$cli evaluate navigation2d "${ppo_protocol[@]}" --checkpoint "${ppo_best[@]}" --baselines --out "$out/eval-best-ppo-maml"
# the same policies adapted with Finn et al.'s lambda = 1, which they were not meta-trained for
$cli evaluate navigation2d --protocol paper --checkpoint "${ppo_best[@]}" --out "$out/eval-best-ppo-maml-lambda1"
$cli evaluate navigation2d --protocol paper --checkpoint "$out"/maml-vpg-seed{0,1,2}/best.pt \
  "$out"/maml-trpo-seed{0,1,2}/best.pt "$out"/ppo-inner-seed{0,1,2}/best.pt --baselines --pretrained "$out"/pretrain-seed0/best.pt \
  --out "$out/eval-best"
$cli evaluate navigation2d "${ppo_protocol[@]}" --checkpoint "${ppo_last[@]}" --out "$out/eval-last-ppo-maml"
$cli evaluate navigation2d --protocol paper --checkpoint "$out"/maml-vpg-seed{0,1,2} \
  "$out"/maml-trpo-seed{0,1,2} "$out"/ppo-inner-seed{0,1,2} --pretrained "$out"/pretrain-seed0 --out "$out/eval-last"
$cli evaluate navigation2d "${ppo_protocol[@]}" --checkpoint "${ppo_best[@]}" --diagnose --out "$out/eval-diagnose"
# the same checkpoints adapted on the batch of Finn et al.'s released test script (4000 env steps of whole episodes per step)
$cli evaluate navigation2d "${ppo_protocol[@]}" --batch-steps 4000 --checkpoint "${ppo_best[@]}" \
  --out "$out/eval-batch4000-ppo-maml"
$cli evaluate navigation2d --protocol custom --horizon 100 --batch-steps 4000 --checkpoint \
  "$out"/maml-vpg-seed{0,1,2}/best.pt "$out"/maml-trpo-seed{0,1,2}/best.pt "$out"/ppo-inner-seed{0,1,2}/best.pt --baselines \
  --pretrained "$out"/pretrain-seed0/best.pt --out "$out/eval-batch4000"
# the configuration at or above Finn et al. in the expected reading, and the expected reading of every algorithm
h32_best=()
for seed in 10 11 12 13 14; do
  train --algo ppo-maml --inner-steps 2 --kl-stop 0.05 --anneal-lr --gae-lambda 0.95 --hidden 32 32 --init-log-std -0.916 \
    --log-std-lr-scale 1e-6 --outer-every-step --iterations 450 --seed "$seed" --out "$out/ppo-maml-h32-fs0.040-seed$seed"
  h32_best+=("$out/ppo-maml-h32-fs0.040-seed$seed/best.pt")
done
for task_seed in 101 100; do
  $cli evaluate navigation2d "${ppo_protocol[@]}" --test-tasks 4000 --task-seed "$task_seed" --checkpoint "${h32_best[@]}" \
    --out "$out/eval-4000tasks-$task_seed-ppo-maml-h32"
done
$cli evaluate navigation2d "${ppo_protocol[@]}" --repeats 10 --checkpoint "${h32_best[@]}" --out "$out/eval-r10-ppo-maml-h32"
$cli evaluate navigation2d "${ppo_protocol[@]}" --test-tasks 4000 --task-seed 101 --checkpoint "${ppo_best[@]}" \
  --out "$out/eval-4000tasks-101-ppo-maml"
$cli evaluate navigation2d --protocol custom --horizon 100 --test-tasks 4000 --task-seed 101 --checkpoint \
  "$out"/maml-vpg-seed{0,1,2}/best.pt "$out"/maml-trpo-seed{0,1,2}/best.pt "$out"/ppo-inner-seed{0,1,2}/best.pt \
  --pretrained "$out"/pretrain-seed0/best.pt --out "$out/eval-4000tasks-101"
