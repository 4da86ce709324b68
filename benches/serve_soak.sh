#!/usr/bin/env bash
# Soak of `emcoder serve`: steady load from wrk (8 connections, one-text MC N=50 requests of
# real GoEmotions test texts) for SOAK_S seconds (default 600), the server's RSS sampled every
# 10 s with the engine's scratch arena (emcoder_scratch_bytes). Prints RSS after warm-up (60 s), at the end and its maximum, and wrk's totals: requests,
# errors, p50/p99. Run benches/serve_load.sh first (it writes the request bodies and builds
# the release binary), or let this script do the same.
#
#   bash benches/serve_soak.sh             # 10 minutes
#   SOAK_S=60 bash benches/serve_soak.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SOAK_S=${SOAK_S:-600}
CONNS=${CONNS:-8}
OUT=$ROOT/target/serve-bench
if [[ ! -f $OUT/mc50.bodies || ! -x target/release/emcoder ]]; then
    DUR=1 CONC=1 MODES=mc50 bash benches/serve_load.sh >/dev/null
fi
BIN=$ROOT/target/release/emcoder
"$BIN" serve --port 0 2>"$OUT/soak-serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$OUT/soak-serve.log" && break; sleep 0.1; done
url=$(grep -o "http://[0-9.:]*" "$OUT/soak-serve.log" | head -n1)
rss() { awk '/VmRSS/ {print $2}' /proc/$server/status; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n1); RSS at start: $(( $(rss) / 1024 )) MiB"
BODIES=$OUT/mc50.bodies wrk -t1 -c"$CONNS" -d"${SOAK_S}s" --timeout 30s --latency \
    -s "$OUT/post.lua" "$url/v1/predict" >"$OUT/soak-wrk.txt" &
load=$!
: >"$OUT/soak-rss.txt"
elapsed=0
while kill -0 $load 2>/dev/null; do
    sleep 10
    elapsed=$((elapsed + 10))
    scratch=$(curl -s "$url/metrics" | awk '$1 == "emcoder_scratch_bytes" {print $2}')
    echo "$elapsed $(rss) ${scratch:-0}" >>"$OUT/soak-rss.txt"
done
wait $load
kill -TERM $server
wait $server
trap - EXIT
awk -v warm=60 '
    $1 == warm { w = $2 } { last = $2; if ($2 > max) max = $2; if ($1 >= warm) { n++; if (min == "" || $2 < min) min = $2 } }
    $1 == warm { ws = $3 } { ls = $3 }
    END { printf "RSS: %.1f MiB after %d s warm-up, %.1f MiB at the end, %.1f-%.1f MiB after warm-up, %d samples; the engine scratch arena %.1f MiB after warm-up, %.1f MiB at the end\n",
          w / 1024, warm, last / 1024, min / 1024, max / 1024, NR, ws / 1048576, ls / 1048576 }' "$OUT/soak-rss.txt"
requests=$(awk '/requests in/ {print $1}' "$OUT/soak-wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$OUT/soak-wrk.txt")
sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$OUT/soak-wrk.txt")
echo "wrk: $requests requests in ${SOAK_S} s ($(awk '/Requests\/sec/ {print $2}' "$OUT/soak-wrk.txt")/s), errors: $(( ${non2xx:-0} + ${sockerr:-0} )), latency p50 $(awk '$1 == "50%" {print $2}' "$OUT/soak-wrk.txt") p99 $(awk '$1 == "99%" {print $2}' "$OUT/soak-wrk.txt")"
