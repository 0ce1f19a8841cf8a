#!/usr/bin/env bash
# One task family on one GPU machine in one go: collect its data with every core, then train four runs side by side
# on the one GPU (each meta-step is launch-bound, so the runs share it well) until the job's wall-clock budget is spent.
# The recipe is push's (checkpoints/README.md, Push): the query-map label, a meta-batch of 16, every 4th frame.
#   FAMILY-gpu-daml    DAML (one command, no earlier stage)
#   FAMILY-gpu-linear  the same with the learned *linear* loss (the ablation)
#   FAMILY-gpu-bb      the black-box baseline (a video encoder writes the policy's bias and target query, and for
#                      pick_place its place query)
#   FAMILY-gpu-tune    the shipped DAML model (FROM/FAMILY-daml.pt) trained on at a third of the learning rate; only
#                      when that file exists
# The first three start from scratch, or with FROM set from FROM/FAMILY-daml.pt, FAMILY-linear.pt and
# FAMILY-blackbox.pt (FROM=checkpoints continues the shipped models: weights only, a fresh optimizer, step 0, this
# job's data).
# A run stopped at step s is the recipe `steps=s` (up to GPU nondeterminism): the batch of step s depends only on the seed
# and s, and Adam's learning rate is constant (unless EXTRA sets lr_schedule=cosine). Checkpoints every CKPT_EVERY
# steps (atomic writes: a stopped run leaves none half-written). Evaluate them with oneshot-eval (checkpoints/README.md,
# Push).
# Run the same command again (the same OUT and NUM_TASKS) to go on: the collection keeps its complete shards and each
# run that has a checkpoint resumes from it (resume=true) for the new budget. Ctrl-C stops every run, keeping its
# checkpoint (exit status 130).
#
# Usage: bash launch/gpu_train.sh FAMILY OUT SECONDS [NUM_TASKS]
#   FAMILY     push or pick_place (reach runs too, but its shipped models come from another recipe, checkpoints/README.md)
#   OUT        folder for the dataset (OUT/data), the runs (OUT/runs) and the logs (OUT/*.log); relative to the repo root
#   SECONDS    wall-clock budget of the whole job: the runs train for what the collection leaves of it
#   NUM_TASKS  training tasks to collect (default 480; push: the first 360 are data/push-pos's, the same seeds)
# Environment: PYTHON (default python3), DEVICE (default cuda), FROM (see above), CKPT_EVERY (default 500),
#   EXTRA (overrides added to every run, e.g. steps=3).
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root: OUT, if relative, and the shipped checkpoint are found from there
usage="usage: bash launch/gpu_train.sh FAMILY OUT SECONDS [NUM_TASKS]"
family=${1:?$usage}
out=${2:?$usage}
budget=${3:?$usage}
tasks=${4:-480}
for number in "$budget" "$tasks"; do
    [[ $number =~ ^[0-9]+$ ]] || { echo "SECONDS and NUM_TASKS are whole numbers, not '$number'" >&2; echo "$usage" >&2; exit 1; }
done
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
from=${FROM:-}
"$py" -c 'import sys, envs; f = sys.argv[1]; sys.exit(0 if f in envs.FAMILIES else
                  "unknown task family %r; allowed: %s" % (f, ", ".join(envs.FAMILIES)))' "$family" || exit 1
shipped=${from:-checkpoints}
for kind in daml linear blackbox; do
    [ -z "$from" ] || [ -f "$from/$family-$kind.pt" ] || { echo "FROM=$from has no $family-$kind.pt" >&2; exit 1; }
done
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$out"

"$py" -m launch.collect env="$family" split=train num_tasks="$tasks" demos_per_task=3 videos_per_task=3 all_targets=true \
    same_scenes=true demo_noise=0.1 workers="$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))" out="$out/data" \
    > "$out/collect.log" 2>&1 || { echo "the collection failed: $out/collect.log" >&2; exit 1; }
collected=$SECONDS
budget=$(( budget - collected ))
[ "$budget" -ge 30 ] || { echo "the collection left ${budget} s of the budget to train: give more seconds" >&2; exit 1; }
echo "the data ($tasks tasks) was ready after $collected s; training for $budget s" | tee "$out/times.txt"

# pick_place grasps: its last feature map is 32x32 (stride 1 in the second conv layer too), as its shipped model's;
# reach and push read a 16x16 one
strides="[2,2,1]"
[ "$family" != pick_place ] || strides="[2,1,1]"
recipe=(policy.goal_prediction=true policy.target_query=true policy.hue_prediction=true adaptation_loss.target_match=true
      "meta.adapt_only=[bias_transform,target_query,fc,head]" "policy.conv_strides=$strides" loader.frame_stride=4
      bc.query_map_weight=1 meta_batch=16 steps=1000000 val_every=0 ckpt_every="${CKPT_EVERY:-500}" log_every=100
      logger=none progress=false threads=1 loader=gpu device="$device")

# pick_place reads the box as well as the object (docs/imitation.md, the place query): every run gets the place
# query (the black box writes it from a second reader of the video; its meta.adapt_only is its own, the queries it
# writes)
place=()
[ "$family" != pick_place ] || place=(policy.place_query=true adaptation_loss.place_match=true bc.place_map_weight=1
                                     "meta.adapt_only=[bias_transform,target_query,fc,head,place_query]")

names=() pids=()
train() {  # NAME OVERRIDES...: start one run in the background (resumed if it has a checkpoint), stopped at the budget
    local name=$1 resume=()
    shift
    [ ! -f "$out/runs/$name/checkpoints/last.pt" ] || resume=(resume=true)
    # timeout runs it in a process group of its own and passes on the SIGINT or SIGTERM it gets (trap, below); a run
    # that has not stopped 60 s after its SIGINT is killed (status 137: a failure)
    timeout -k 60 -s INT "$budget" "$py" -m launch.train data="$out/data" out="$out/runs" run_name="$name" "${recipe[@]}" \
        "$@" "${resume[@]}" "${extra[@]}" > "$out/$name.log" 2>&1 &
    names+=("$name") pids+=($!)
}

start() {  # KIND: sets `init` to init_from=FROM/FAMILY-KIND.pt when FROM is set, else to nothing
    init=()
    [ -z "$from" ] || init=("init_from=$from/$family-$1.pt")
}

start daml && train "$family-gpu-daml" "${place[@]}" "${init[@]}"
start linear && train "$family-gpu-linear" adaptation_loss.kind=linear "${place[@]}" "${init[@]}"
start blackbox && train "$family-gpu-bb" adaptation_loss.kind=encoder "${place[@]}" "${init[@]}"
if [ -f "$shipped/$family-daml.pt" ]; then
    train "$family-gpu-tune" init_from="$shipped/$family-daml.pt" meta.meta_lr=3e-4 "${place[@]}"
else
    echo "no $shipped/$family-daml.pt: $family-gpu-tune is not run" | tee -a "$out/times.txt"
fi
interrupted=0
trap 'interrupted=1; kill -INT "${pids[@]}" 2>/dev/null || true' INT TERM  # Ctrl-C: every run stops, keeping its checkpoint
failed=0
for i in "${!pids[@]}"; do
    while true; do  # a trapped signal ends `wait` early (status > 128) while the run is still going
        status=0
        wait "${pids[$i]}" || status=$?
        kill -0 "${pids[$i]}" 2>/dev/null || break
    done
    # 124: stopped at the budget; 130: stopped by a Ctrl-C passed on (both keep the last checkpoint)
    case $status in
        0 | 124 | 130) ;;
        *) echo "${names[$i]} failed ($status): $out/${names[$i]}.log" >&2; failed=1 ;;
    esac
done
[ "$interrupted" -eq 0 ] || { echo "interrupted: every run kept its last checkpoint; run the same command to go on" >&2; exit 130; }
exit $failed
