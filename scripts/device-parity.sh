#!/usr/bin/env bash
# Parity of the executor on a device against the single-process CPU run (the check to run first on a GPU node):
#   scripts/device-parity.sh [DEVICE] [OUT_DIR]     DEVICE: cuda (default) or cpu (checks this script itself)
# Trains a small GPT for 3 steps in fp32 under each layout (DP=2, TP=2, PP=2 1F1B and interleaved, ZeRO-1/2/3 with
# DP=2, TP=2 x PP=2, full recompute) with `run --device DEVICE`, and compares each step's loss with the one-rank CPU
# run of the same seed. A layout needing more devices than the node has is reported as skipped (run's exit 2).
# Exit code: 0 when every layout that ran matched (and one ran at least), 1 otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
device="${1:-cuda}"
out="${2:-/tmp/planner-device-parity}"
tolerance="${TOLERANCE:-1e-4}" # fp32 on a GPU: cuBLAS and the CPU's BLAS sum in different orders
mkdir -p "$out"
planner="$root/planner"

cat >"$out/config.json" <<'JSON'
{"model_type": "gpt2", "n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 32, "vocab_size": 256, "n_inner": null, "tie_word_embeddings": true}
JSON
plan() { # name tp pp dp zero vpp recompute
  cat >"$out/$1.json" <<JSON
{"model": "$out/config.json", "cluster": "local-cpu", "tp": $2, "pp": $3, "dp": $4, "cp": 1, "zero": $5, "mbs": 2, "gbs": 8,
 "seq": 32, "vpp": $6, "recompute": "$7", "sequence_parallel": false, "precision": "fp32"}
JSON
}
plan single 1 1 1 0 1 none
plan dp2 1 1 2 0 1 none
plan tp2 2 1 1 0 1 none
plan pp2-1f1b 1 2 1 0 1 none
plan pp2-interleaved 1 2 1 0 2 none
plan zero1-dp2 1 1 2 1 1 none
plan zero2-dp2 1 1 2 2 1 none
plan zero3-dp2 1 1 2 3 1 none
plan tp2-pp2 2 2 1 0 1 none
plan dp2-full-recompute 1 1 2 0 1 full

run() { # name device -> out/name.device.json; returns run's exit code
  "$planner" run --plan "$out/$1.json" --steps 3 --warmup 1 --seed 7 --device "$2" --json --history "$out/history.csv" \
    >"$out/$1.$2.json" 2>"$out/$1.$2.err"
}
run single cpu || { echo "the CPU reference failed: $(tail -1 "$out/single.cpu.err")" >&2; exit 1; }
failed=0
ran=0
for layout in dp2 tp2 pp2-1f1b pp2-interleaved zero1-dp2 zero2-dp2 zero3-dp2 tp2-pp2 dp2-full-recompute; do
  if run "$layout" "$device"; then
    if python3 - "$out/single.cpu.json" "$out/$layout.$device.json" "$tolerance" "$layout" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))["measured"]["loss"]
got = json.load(open(sys.argv[2]))["measured"]["loss"]
tol = float(sys.argv[3])
worst = max(abs(a - b) for a, b in zip(ref, got))
ok = len(ref) == len(got) and worst <= tol
print(f"{sys.argv[4]:<22} {'match' if ok else 'DIFFER'}: largest loss difference {worst:.2e} over {len(got)} steps (tolerance {tol:g})")
sys.exit(0 if ok else 1)
PY
    then ran=$((ran + 1)); else failed=1; fi
  else
    code=$?
    msg="$(tail -1 "$out/$layout.$device.err")"
    if [ "$code" -eq 2 ] && [[ "$msg" == *"device"* ]]; then
      printf '%-22s skipped: %s\n' "$layout" "$msg"
    else
      printf '%-22s FAILED (exit %s): %s\n' "$layout" "$code" "$msg"
      failed=1
    fi
  fi
done
if [ "$ran" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no layout ran on $device" >&2
  exit 1
fi
exit "$failed"
