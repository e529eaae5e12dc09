#!/usr/bin/env bash
# Two machines emulated on this one (scripts/hosts.sh: network namespaces and host names of their own, joined by a
# veth pair shaped to RATE_MBIT megabits per second): the multi-node paths of profile and run over a real network
# interface between distinct hosts, not loopback. Needs root and iproute2.
#   scripts/two-hosts.sh [OUT_DIR] [RATE_MBIT] [STEPS]
# Each pass: profile --nnodes 2 --ranks 1 on a cluster of two one-rank nodes (the inter-node tier fitted from the
# collectives between the hosts, printed beside the shaped rate), then run of three plans of a small GPT across the
# hosts (DP=2, PP=2, TP=2) priced with that calibration, appended to OUT_DIR/history.csv. At the end
# validate --executed prints measured against predicted.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-/tmp/planner-two-hosts}" && cd "${1:-/tmp/planner-two-hosts}" && pwd)"
rate="${2:-1000}"
steps="${3:-20}"
warmup=$((steps / 4))
planner="$root/planner"

# Build once before the hosts start (the wrapper rebuilds on a source change; two hosts at once would race).
"$planner" presets >/dev/null

tag="pl$(($$ % 100000))"
trap '"$root/scripts/hosts.sh" down "$tag"' EXIT
master="$("$root/scripts/hosts.sh" up "$tag" "$rate")"
on() { "$root/scripts/hosts.sh" on "$tag" "$1" "$planner" "${@:2}"; }

cat >"$out/two-hosts.yaml" <<EOF
# Two emulated hosts of one CPU rank each, joined by a ${rate} Mbit/s veth pair (scripts/two-hosts.sh).
name: two-hosts
gpu: local-cpu
nodes: 2
gpus_per_node: 1
intra_node:
  bandwidth_gbs: 5
  latency_us: 20
inter_node:
  bandwidth_gbs: $(awk -v r="$rate" 'BEGIN { printf "%.4f", r / 8000 }')
  latency_us: 50
EOF
cat >"$out/config.json" <<'EOF'
{"model_type": "gpt2", "n_layer": 4, "n_embd": 256, "n_head": 8, "n_positions": 128, "vocab_size": 8192, "n_inner": null, "tie_word_embeddings": true}
EOF
plan() { # name tp pp dp mbs
  cat >"$out/$1.json" <<EOF
{"model": "$out/config.json", "cluster": "$out/two-hosts.yaml", "tp": $2, "pp": $3, "dp": $4, "cp": 1, "zero": 0, "mbs": $5, "gbs": 16,
 "seq": 128, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
EOF
}
plan dp2 1 1 2 4
plan pp2 1 2 1 2
plan tp2 2 1 1 4

port=$((29500 + $$ % 400))
both() { # runs "$@" on both hosts (node rank appended), host 0's output to stdout, host 1's to $out/host1.log
  on 1 "$@" --nnodes 2 --node-rank 1 --master-addr "$master" --master-port "$port" >>"$out/host1.log" 2>&1 &
  local other=$!
  local status=0
  on 0 "$@" --nnodes 2 --node-rank 0 --master-addr "$master" --master-port "$port" || status=$?
  wait "$other" || { echo "two-hosts.sh: host 1 failed (its output: $out/host1.log)" >&2; status=1; }
  port=$((port + 1))
  return $status
}

# As scripts/closed-loop.sh: PASSES passes over the plans (odd forward, even reverse), a profile before each, so that
# one profile or run caught in a slow spell of this VM does not set every figure.
passes="${PASSES:-3}"
for pass in $(seq 1 "$passes"); do
  echo "== pass $pass: profile across host0 and host1 (${rate} Mbit/s each way)"
  both profile --cluster "$out/two-hosts.yaml" --out "$out/calibration.csv" --ranks 1 --keep-measurements "$out/measurements-$pass.json" \
    >"$out/profile-$pass.txt"
  grep -E "^inter-node fit|^fit: efficiency|training step of" "$out/profile-$pass.txt" || true
  awk -F, -v r="$rate" '$1 == "inter_bandwidth_gbs" { printf "inter-node bandwidth fitted %.4f GB/s, the link %.4f GB/s each way (%+.1f %%)\n", $2, r / 8000, ($2 / (r / 8000) - 1) * 100 }' \
    "$out/calibration.csv"
  if [ $((pass % 2)) -eq 1 ]; then order="dp2 pp2 tp2"; else order="tp2 pp2 dp2"; fi
  for p in $order; do
    both run --plan "$out/$p.json" --steps "$steps" --warmup "$warmup" --calibration "$out/calibration.csv" \
      --history "$out/history.csv" --json >"$out/$p.run$pass.json"
    echo "ran $p across the two hosts"
  done
done
"$planner" validate --executed "$out/history.csv"
