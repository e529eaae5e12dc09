#!/usr/bin/env bash
# The closed loop of README "validate --executed" on this machine: profile local-cpu, run five plans of a small
# GPT with two rank processes each, and compare the measured step times and memory with the predictions.
#   scripts/closed-loop.sh [OUT_DIR] [STEPS] [WARMUP]  (the median step time leaves out the first WARMUP steps)
#   scripts/closed-loop.sh --shapes [OUT_DIR] [STEPS] [WARMUP]  (the mode over seven model shapes: closed-loop-shapes.sh)
# Writes OUT_DIR/history.csv (runs appended), the plans and each run's JSON; prints validate --executed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--shapes" ]; then
  shift
  exec "$root/scripts/closed-loop-shapes.sh" "$@"
fi
out="${1:-/tmp/planner-closed-loop}"
steps="${2:-40}"
warmup="${3:-$((steps / 4))}"
mkdir -p "$out"
planner="$root/planner"

# A GPT-2-shaped model small enough for two ranks on two cores: 4 blocks, hidden 256, 8 heads, an 8k vocabulary.
cat >"$out/config.json" <<'EOF'
{"model_type": "gpt2", "n_layer": 4, "n_embd": 256, "n_head": 8, "n_positions": 128, "vocab_size": 8192, "n_inner": null, "tie_word_embeddings": true}
EOF

plan() { # name tp pp dp mbs recompute
  cat >"$out/$1.json" <<EOF
{"model": "$out/config.json", "cluster": "local-cpu", "tp": $2, "pp": $3, "dp": $4, "cp": 1, "zero": 0, "mbs": $5, "gbs": 16,
 "seq": 128, "vpp": 1, "recompute": "$6", "sequence_parallel": false, "precision": "fp32"}
EOF
}
plan dp2 1 1 2 4 none
plan tp2 2 1 1 4 none
plan pp2-mbs1 1 2 1 1 none
plan pp2-mbs2 1 2 1 2 none
plan dp2-full 1 1 2 4 full

# Each plan once per pass (three by default), every second pass in reverse order, so that a slow spell of the machine (this VM's speed
# wanders by 10-15 % over minutes) does not fall on one plan alone; validate --executed takes each plan's median.
# A profile before each pass: a calibration is a snapshot of the machine's speed over its half minute, and each run is
# priced with the latest one (the history keeps the prediction made at the time of the run), so that one profile
# caught in a slow or fast spell does not shift every plan's error alike.
# PASSES (default 3, odd) sets the passes: more make each plan's median outlast a longer slow spell.
passes="${PASSES:-3}"
forward="dp2 tp2 pp2-mbs1 pp2-mbs2 dp2-full"
reverse="dp2-full pp2-mbs2 pp2-mbs1 tp2 dp2"
for pass in $(seq 1 "$passes"); do
  if [ $((pass % 2)) -eq 1 ]; then order="$forward"; else order="$reverse"; fi
  "$planner" profile --cluster local-cpu >"$out/profile-$pass.txt"
  grep -E "training step of a 2-block|^fit: efficiency|calibration for" "$out/profile-$pass.txt" || true
  for p in $order; do
    "$planner" run --plan "$out/$p.json" --steps "$steps" --warmup "$warmup" --history "$out/history.csv" --json >"$out/$p.run$pass.json"
    echo "ran $p"
  done
done
"$planner" validate --executed "$out/history.csv"
