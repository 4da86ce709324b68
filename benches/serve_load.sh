#!/usr/bin/env bash
# Load test of `emcoder serve` on 127.0.0.1 with a real load generator (wrk, Debian's package):
# one-text requests of real GoEmotions test texts, deterministic and MC N=50, at 1, 8, 32 and
# 128 concurrent connections, with batching across requests on and off (--no-batching), each
# for DUR seconds; next to `emcoder predict` in one process on the same texts (the same
# engine with no HTTP: what the server could reach). Prints a markdown table (texts/s, p50,
# p99, errors) for benches/RESULTS.md.
#
#   bash benches/serve_load.sh              # DUR=10 s per deterministic cell, DUR_MC=30 s per
#                                           # MC cell: about 6 minutes
#   DUR=5 CONC="1 32" bash benches/serve_load.sh
#
# Bounded: every run is DUR seconds, the server's queue (1024) holds every client, and the
# server is stopped with SIGTERM after each configuration (its exit status is checked).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DUR=${DUR:-10}
# MC N=50 requests take seconds at 128 clients: a longer window, so that many batches finish.
DUR_MC=${DUR_MC:-30}
CONC=${CONC:-"1 8 32 128"}
MODES=${MODES:-"det mc50"}
NTEXTS=${NTEXTS:-256}
OUT=$ROOT/target/serve-bench
mkdir -p "$OUT"
command -v wrk >/dev/null || {
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build --release --locked -p emcoder-cli --bin emcoder >/dev/null 2>&1 ||
    cargo build --release --locked -p emcoder-cli --bin emcoder
BIN=$ROOT/target/release/emcoder

awk -F"\t" -v n="$NTEXTS" "NR <= n { print \$1 }" data/goemotions/test.tsv >"$OUT/texts.txt"
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
texts = [t.rstrip("\n") for t in open(f"{out}/texts.txt", encoding="utf-8")]
with open(f"{out}/det.bodies", "w") as f:
    for t in texts:
        f.write(json.dumps({"inputs": t, "deterministic": True, "truncate": True}) + "\n")
with open(f"{out}/mc50.bodies", "w") as f:
    for t in texts:
        f.write(json.dumps({"inputs": t, "samples": 50, "truncate": True}) + "\n")
EOF
cat >"$OUT/post.lua" <<'EOF'
-- Each connection cycles through the request bodies (one JSON per line of $BODIES).
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
EOF

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
echo "CPU: $cpu, $(nproc) logical CPUs; wrk -t1, $DUR s per cell ($DUR_MC s for MC); $NTEXTS GoEmotions test texts"

# In one process, no HTTP: the same texts through `emcoder predict` (median of 3 runs, the
# model's load excluded by timing an empty run).
inproc() {
    local flags=$1 best=()
    for _ in 1 2 3; do
        local t0 t1 t2
        t0=$(date +%s.%N)
        "$BIN" predict --json --truncate $flags "" >/dev/null
        t1=$(date +%s.%N)
        "$BIN" predict --json --truncate $flags <"$OUT/texts.txt" >/dev/null
        t2=$(date +%s.%N)
        best+=("$(echo "$NTEXTS / (($t2 - $t1) - ($t1 - $t0))" | bc -l)")
    done
    printf '%s\n' "${best[@]}" | sort -g | sed -n 2p
}
declare -A REF
REF[det]=$(inproc "--deterministic")
REF[mc50]=$(inproc "--samples 50")

printf '\n| requests | batching | clients | texts/s | p50 ms | p99 ms | errors | vs in-process |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
for mode in $MODES; do
    for batching in on off; do
        flags=(--max-queue 1024)
        [[ $batching == off ]] && flags+=(--no-batching)
        "$BIN" serve --port 0 "${flags[@]}" 2>"$OUT/serve.log" &
        server=$!
        for _ in $(seq 1 100); do grep -q "listening on" "$OUT/serve.log" && break; sleep 0.1; done
        url=$(grep -o "http://[0-9.:]*" "$OUT/serve.log" | head -n1)
        for c in $CONC; do
            dur=$([[ $mode == det ]] && echo "$DUR" || echo "$DUR_MC")
            BODIES=$OUT/$mode.bodies wrk -t1 -c"$c" -d"${dur}s" --timeout 30s --latency \
                -s "$OUT/post.lua" "$url/v1/predict" >"$OUT/wrk-$mode-$batching-$c.txt"
            f=$OUT/wrk-$mode-$batching-$c.txt
            rps=$(awk '/Requests\/sec/ {print $2}' "$f")
            to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0; else if (v ~ /s$/) printf "%.0f", v * 1000; else print v }'; }
            p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
            p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
            non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
            sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$f")
            errors=$(( ${non2xx:-0} + ${sockerr:-0} ))
            ratio=$(echo "$rps / ${REF[$mode]}" | bc -l)
            label=$([[ $mode == det ]] && echo "1 text, deterministic" || echo "1 text, MC N=50")
            printf '| %s | %s | %d | %.1f | %s | %s | %d | %.2f |\n' "$label" "$batching" "$c" "$rps" "$p50" "$p99" "$errors" "$ratio"
        done
        kill -TERM $server
        wait $server || { echo "serve exited with $? after SIGTERM" >&2; exit 1; }
    done
done
printf '\nIn one process (`emcoder predict`, all %d texts in one call): %.1f texts/s deterministic, %.1f texts/s MC N=50\n' \
    "$NTEXTS" "${REF[det]}" "${REF[mc50]}"
