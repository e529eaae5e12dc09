#!/usr/bin/env bash
# The closed loop of issue 21 on this machine: profile local-cpu, then three runs each of a tiny MoE at EP2 x DP2 and
# a tiny GPT at CP2 (the acceptance check's models and plans), and the predicted against the median measured step. The MoE
# plan is priced at the router's spread that a short run measures first (moe_imbalance).
#   scripts/closed-loop-ep-cp.sh [OUT_DIR] [STEPS]   (STEPS per run, default 12; the report's median skips warm-up)
# Trains on synthetic tokens unless DATA names a token file (uint16 tokens below the vocabulary of 512).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-/tmp/planner-closed-loop-ep-cp}"
steps="${2:-12}"
data=()
if [ -n "${DATA:-}" ]; then data=(--data "$DATA"); fi
mkdir -p "$out"
cat >"$out/moe.json" <<'JSON'
{"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 256,
 "vocab_size": 512, "max_position_embeddings": 64, "hidden_act": "silu", "num_local_experts": 4, "num_experts_per_tok": 2}
JSON
cat >"$out/gpt.json" <<'JSON'
{"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 64, "vocab_size": 512, "n_inner": null, "activation_function": "gelu_new"}
JSON
plan() { # name model dp cp ep
  cat >"$out/$1.json" <<JSON
{"model": "$out/$2", "cluster": "local-cpu", "tp": 1, "pp": 1, "dp": $3, "cp": $4, "ep": $5, "zero": 0, "mbs": 2, "gbs": 8,
 "seq": 64, "vpp": 1, "recompute": "none", "sequence_parallel": false, "precision": "fp32"}
JSON
}
plan moe-ep2 moe.json 2 1 2
plan gpt-cp2 gpt.json 1 2 1
"$root/planner" profile --cluster local-cpu >"$out/profile.txt"
# The router's spread on this data is a property of the workload, not of the machine: a short run measures it
# (measured.moe_imbalance) and the timed plan prices it as its moe_imbalance; the balanced price is printed beside.
"$root/planner" run --plan "$out/moe-ep2.json" --steps 4 "${data[@]}" --json >"$out/moe-ep2-routing.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
plan = json.load(open(f"{out}/moe-ep2.json"))
plan["moe_imbalance"] = round(json.load(open(f"{out}/moe-ep2-routing.json"))["measured"]["moe_imbalance"], 3)
json.dump(plan, open(f"{out}/moe-ep2-routed.json", "w"))
PY
for name in moe-ep2-routed gpt-cp2; do
  for i in 1 2 3; do
    "$root/planner" run --plan "$out/$name.json" --steps "$steps" "${data[@]}" --json >"$out/$name-$i.json"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
balanced = json.load(open(f"{out}/moe-ep2-routing.json"))["predicted"]["step_time_s"]
for name, part in (("moe-ep2-routed", "ep_comm"), ("gpt-cp2", "cp_comm")):
    runs = [json.load(open(f"{out}/{name}-{i}.json")) for i in (1, 2, 3)]
    measured = [r["measured"]["step_time_s"] for r in runs]
    predicted = runs[0]["predicted"]["step_time_s"]
    median = statistics.median(measured)
    print(f"{name}: predicted {predicted:.4f} s, measured {', '.join(f'{m:.4f}' for m in measured)} (median {median:.4f}), "
          f"error {(predicted - median) / median * 100:+.1f} %; {part} predicted {runs[0]['predicted']['breakdown'][part]:.4f}, "
          f"measured {statistics.median(r['measured']['breakdown'][part] for r in runs):.4f} s")
    if name.startswith("moe"):
        print(f"  priced at moe_imbalance {runs[0]['plan'].get('moe_imbalance', 1)} (measured by the routing run; "
              f"balanced routing is priced {balanced:.4f} s, {(balanced - median) / median * 100:+.1f} %)")
PY
