#!/usr/bin/env bash
# A preset's pre-training at full scale (262,800 images; PRESET=gpu by default, PRESET=paper for the paper's
# exact recipe) on a GPU machine that has Python, torch
# and our other dependencies but no network and no project install, in steps that each fit one call of a
# time-limited remote shell. Made for the device machine of docs/benchmarks.md; any GPU box works.
#
# Here:   python tests/benchmarks/offline_bundle.py pack --out .dev/bundle     (fonts and encoder, in parts)
# There, from the repository root, with the parts copied in:
#   tests/benchmarks/gpu_run.sh render PART0   fonts from part 0; the pretrain, OOD and in-domain corpora
#   tests/benchmarks/gpu_run.sh train PART1    the encoder from the parts; a 40-step speed probe picks
#                                                    the epochs that fit TRAIN_BUDGET seconds (20 at most, the
#                                                    paper's); pre-training until STEP_LIMIT seconds
#   tests/benchmarks/gpu_run.sh finish         resume to the end; evaluate on the OOD sets, within and
#                                                    across languages; pack the results into RESULTS
#   tests/benchmarks/gpu_run.sh extra          evaluate in-domain; export to ONNX; pack again
# A step interrupted by its time limit stops at a checkpoint (SIGINT) and the next step resumes it.
set -euo pipefail
W=${W:-/root/hw}                  # work folder on the GPU machine
PRESET=${PRESET:-gpu}             # train/configs/gpu.yaml, or paper
RESULTS=${RESULTS:-${OUT:-$W/results}}
PY=${PY:-python3}
WORKERS=${WORKERS:-12}            # DataLoader processes (the machine has 16 cores)
STEP_LIMIT=${STEP_LIMIT:-400}     # seconds of training per step (each remote call runs at most 10 min)
TRAIN_BUDGET=${TRAIN_BUDGET:-660} # seconds of training over the `train` and `finish` steps together
CORPORA=${CORPORA:-"pretrain ood-en ood-es ood-zh in-domain"}
export PYTHONPATH=$PWD SYNTH_CACHE=$W/cache PYTHONUNBUFFERED=1
mkdir -p "$W/parts" "$W/cache" "$RESULTS"

pack() {
  tar -cf "$RESULTS/$PRESET-run.tar" -C "$W" run/config.json run/metrics.jsonl \
    $(cd "$W" && ls -d run/curves.png run/model.json run/eval export 2>/dev/null)
  ls -la "$RESULTS"
}

train_for() {  # seconds, then the pretrain arguments
  local limit=$1; shift
  timeout -s INT -k 60 "$limit" $PY -m train pretrain --data "$W/pretrain" --preset "$PRESET" --text-encoder "$W/e5" \
    --workers "$WORKERS" ${EXTRA_ARGS:-} "$@" || echo "pretrain stopped (exit $?); resume with the next step"
}

case ${1:?render, train or finish} in
render)
  cp -r "${2:?the bundle part with rest.tar.xz}" "$W/parts/"
  $PY -c "import sys, tarfile; t = tarfile.open(sys.argv[1]); t.extractall(sys.argv[2], filter='data',
    members=[m for m in t if m.name.startswith('fonts')])" "$2/rest.tar.xz" "$W/cache"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  for corpus in $CORPORA; do
    start=$(date +%s.%N)
    $PY -m synth corpus "$corpus" --out "$W/$corpus" --workers "$(nproc)" >/dev/null
    echo "corpus $corpus: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
  done
  ;;
train)
  cp -r "${2:?the other bundle part}" "$W/parts/"
  $PY tests/benchmarks/offline_bundle.py unpack --parts "$W/parts" --cache "$W/cache.unused" --encoder "$W/e5"
  rm -rf "$W/probe"
  train_for 300 --out "$W/probe" --max-steps 40 >/dev/null
  epochs=$($PY - "$W/probe/metrics.jsonl" "$TRAIN_BUDGET" <<'EOF'
import json, statistics, sys
rates = [r["images_per_s"] for r in map(json.loads, open(sys.argv[1])) if "images_per_s" in r][10:]
rate = statistics.median(rates)
epochs = max(1, min(20, int(rate * float(sys.argv[2]) / 262_800)))
print(f"probe: {rate:,.0f} images/s over steps 11-40; {epochs} epochs fit", file=sys.stderr)
print(epochs)
EOF
)
  echo "$epochs" >"$W/epochs"
  start=$(date +%s)
  train_for "$STEP_LIMIT" --out "$W/run" --epochs "$epochs" | tail -5
  echo "train step: $(( $(date +%s) - start )) s"
  ;;
finish)
  epochs=$(cat "$W/epochs")
  if [ ! -f "$W/run/model.safetensors" ]; then
    start=$(date +%s)
    train_for "$STEP_LIMIT" --out "$W/run" --epochs "$epochs" --resume latest | tail -5
    echo "finish step training: $(( $(date +%s) - start )) s"
  fi
  $PY -m train eval --ckpt "$W/run" --data "$W/ood-en" --data "$W/ood-es" --data "$W/ood-zh" --cross-lingual \
    --text-encoder "$W/e5" --workers "$WORKERS" | tail -40
  pack
  ;;
extra)
  $PY -m train eval --ckpt "$W/run" --data "$W/in-domain" --text-encoder "$W/e5" --workers "$WORKERS" | tail -12
  $PY -m train export --ckpt "$W/run" --out "$W/export" --text-encoder "$W/e5" --overwrite | tail -5
  pack
  ;;
esac
