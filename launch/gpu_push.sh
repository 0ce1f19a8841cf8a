#!/usr/bin/env bash
# Push on one GPU machine in one go: collect the push data with every core, then train four runs side by side on
# the one GPU (each meta-step is launch-bound, so the runs share it well) until the job's wall-clock budget is spent.
#   push-gpu-tune    the shipped DAML model (checkpoints/push-daml.pt) trained on, with the query-map label
#   push-gpu-daml    DAML from scratch with the query-map label (one command, no earlier stage)
#   push-gpu-linear  the same with the learned *linear* loss (the ablation)
#   push-gpu-bb      the black-box baseline (a video encoder writes the policy's bias and target query)
# A run stopped at step s is the recipe `steps=s` (up to GPU nondeterminism): the batch of step s depends only on the seed
# and s, and Adam's learning rate is constant. Checkpoints every CKPT_EVERY steps (atomic writes: a stopped run leaves none
# half-written). Evaluate them with oneshot-eval (checkpoints/README.md, Push).
#
# Usage: bash launch/gpu_push.sh OUT SECONDS [NUM_TASKS]
#   OUT        folder for the dataset (OUT/data), the runs (OUT/runs) and the logs (OUT/*.log); relative to the repo root
#   SECONDS    wall-clock budget of the whole job: the runs train for what the collection leaves of it
#   NUM_TASKS  training tasks to collect (default 480: the 360 of data/push-pos, the same seeds, and 120 more)
# Environment: PYTHON (default python3), DEVICE (default cuda), EXTRA (overrides added to every run, e.g. steps=3).
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root: OUT, if relative, and the shipped checkpoint are found from there
usage="usage: bash launch/gpu_push.sh OUT SECONDS [NUM_TASKS]"
out=${1:?$usage}
budget=${2:?$usage}
tasks=${3:-480}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$out"

"$py" -m launch.collect env=push split=train num_tasks="$tasks" demos_per_task=3 videos_per_task=3 all_targets=true \
    same_scenes=true demo_noise=0.1 workers="$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))" out="$out/data" \
    > "$out/collect.log" 2>&1 || { echo "the collection failed: $out/collect.log" >&2; exit 1; }
collected=$SECONDS
budget=$(( budget - collected ))
[ "$budget" -ge 30 ] || { echo "the collection left ${budget} s of the budget to train: give more seconds" >&2; exit 1; }
echo "collected $tasks tasks in $collected s; training for $budget s" | tee "$out/times.txt"

push=(policy.goal_prediction=true policy.target_query=true policy.hue_prediction=true adaptation_loss.target_match=true
      "meta.adapt_only=[bias_transform,target_query,fc,head]" "policy.conv_strides=[2,2,1]" loader.frame_stride=4
      bc.query_map_weight=1 meta_batch=16 steps=1000000 val_every=0 ckpt_every="${CKPT_EVERY:-500}" log_every=100
      logger=none progress=false threads=1 loader=gpu device="$device")

train() {  # NAME OVERRIDES...: one run, stopped at the budget (exit status 124 then, which is not a failure)
    local name=$1 status=0
    shift
    timeout -s INT "$budget" "$py" -m launch.train data="$out/data" out="$out/runs" run_name="$name" "${push[@]}" "$@" \
        "${extra[@]}" > "$out/$name.log" 2>&1 || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 124 ] || { echo "$name failed ($status): $out/$name.log" >&2; return 1; }
}

train push-gpu-tune init_from=checkpoints/push-daml.pt & tune=$!
train push-gpu-daml & daml=$!
train push-gpu-linear adaptation_loss.kind=linear & linear=$!
train push-gpu-bb adaptation_loss.kind=encoder & bb=$!
failed=0
for pid in $tune $daml $linear $bb; do wait "$pid" || failed=1; done
exit $failed
