#!/usr/bin/env bash
# The closed loop over seven model shapes (issue 18): GPT models of hidden 64-1024, sequence 32-512, vocabulary
# 256-32k and one to four blocks per rank, four plans each on two rank processes, every plan run once per pass.
#   scripts/closed-loop-shapes.sh [OUT_DIR] [STEPS] [WARMUP]   (PASSES=3 by default; SHAPES="s1 s2 ..." to pick)
# A profile of local-cpu before each pass; the runs append to OUT_DIR/history.csv, and validate --executed reports each
# plan's median over the passes. OUT_DIR/shapes.csv then holds each plan's median error, shape by shape.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-/tmp/planner-closed-loop-shapes}"
steps="${2:-10}"
warmup="${3:-3}"
passes="${PASSES:-3}"
mkdir -p "$out"
planner="$root/planner"

# name layers hidden heads seq vocab mbs gbs
shapes_all="
s1 2 64 2 32 256 4 16
s2 4 128 4 64 512 2 8
s3 4 256 8 128 8192 4 16
s4 2 512 8 256 16384 2 8
s5 2 1024 16 512 32768 1 4
s6 3 384 6 256 4096 2 8
s7 4 768 12 128 2048 2 8
"
picked="${SHAPES:-s1 s2 s3 s4 s5 s6 s7}"

model() { # name layers hidden heads seq vocab
  cat >"$out/$1.config.json" <<JSON
{"model_type": "gpt2", "n_layer": $2, "n_embd": $3, "n_head": $4, "n_positions": $5, "vocab_size": $6, "n_inner": null, "tie_word_embeddings": true}
JSON
}
plan() { # shape name tp pp dp mbs gbs seq recompute
  cat >"$out/$1-$2.json" <<JSON
{"model": "$out/$1.config.json", "cluster": "local-cpu", "stack": "planner", "tp": $3, "pp": $4, "dp": $5, "cp": 1, "zero": 0, "mbs": $6,
 "gbs": $7, "seq": $8, "vpp": 1, "recompute": "$9", "sequence_parallel": false, "precision": "fp32"}
JSON
}
runs=""
while read -r name layers hidden heads seq vocab mbs gbs; do
  [ -n "$name" ] || continue
  case " $picked " in *" $name "*) ;; *) continue ;; esac
  model "$name" "$layers" "$hidden" "$heads" "$seq" "$vocab"
  plan "$name" dp2 1 1 2 "$mbs" "$gbs" "$seq" none
  plan "$name" tp2 2 1 1 "$mbs" "$gbs" "$seq" none
  plan "$name" pp2 1 2 1 "$mbs" "$gbs" "$seq" none
  plan "$name" dp2-full 1 1 2 "$mbs" "$gbs" "$seq" full
  runs="$runs $name-dp2 $name-tp2 $name-pp2 $name-dp2-full"
done <<<"$shapes_all"

for pass in $(seq 1 "$passes"); do
  "$planner" profile --cluster local-cpu >"$out/profile-$pass.txt"
  order="$runs"
  if [ $((pass % 2)) -eq 0 ]; then order="$(echo "$runs" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
  for p in $order; do
    "$planner" run --plan "$out/$p.json" --steps "$steps" --warmup "$warmup" --history "$out/history.csv" --json >"$out/$p.run$pass.json"
    echo "pass $pass: ran $p"
  done
done
"$planner" validate --executed "$out/history.csv" | tee "$out/validate.txt"
# Each plan's median error over the passes, by shape (the run reports, not the history: they name the plan file).
python3 - "$out" $runs <<'PY'
import json, statistics, sys, glob, os
out, names = sys.argv[1], sys.argv[2:]
rows = []
for n in names:
    errs = []
    for f in sorted(glob.glob(os.path.join(out, f"{n}.run*.json"))):
        d = json.load(open(f))
        if d.get("predicted"):
            errs.append((d["predicted"]["step_time_s"] - d["measured"]["step_time_s"]) / d["measured"]["step_time_s"] * 100)
    if errs:
        rows.append((n, statistics.median(errs), len(errs)))
with open(os.path.join(out, "shapes.csv"), "w") as f:
    f.write("plan,median_error_pct,runs\n")
    for n, e, k in rows:
        f.write(f"{n},{e:.2f},{k}\n")
for n, e, k in rows:
    print(f"{n:16s} {e:+7.1f}%  ({k} runs)")
within = sum(1 for _, e, _ in rows if abs(e) <= 10)
print(f"{within} of {len(rows)} plans within 10 %")
PY
