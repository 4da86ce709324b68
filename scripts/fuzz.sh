#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the loader, the C ABI, the tokenizer wrapper and the
# kernels, under AddressSanitizer. See fuzz/README.md.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 s each, every target)
#
# Builds fuzz/ with the flags cargo-fuzz uses (SanitizerCoverage with inline 8-bit counters,
# PC tables and comparison tracing; -Zsanitizer=address; debug assertions), so no cargo-fuzz
# install is needed; RUSTC_BOOTSTRAP=1 lets the stable toolchain take the -Z flag. Each
# target starts from its committed seeds (fuzz/corpus/TARGET) plus what earlier runs found
# (target/fuzz/corpus/TARGET); a crash stops the run, saves the input under
# target/fuzz/artifacts/TARGET/ and fails the script. One line per target goes to stdout and
# to target/fuzz/runs.tsv: target, seconds, sanitizer, executions, coverage, features, corpus,
# crashes.
# CI runs every target for 30 s.
#
# FUZZ_SANITIZER=none builds without ASan (3-5x the executions per second, for long
# campaigns; assertions and overflow checks stay on); FUZZ_JOBS=2 fuzzes two targets at once;
# FUZZ_TIMEOUT (default 60 s, wall clock) is the time one input may take before it counts as a
# hang (raise it for a campaign run under `nice` beside other work, where a starved process
# can take long over an input).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SECS=${1:-30}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(loader c_api tokenizer kernels)
HOST=$(rustc -vV | sed -n 's/^host: //p')
OUT=$ROOT/target/fuzz
SANITIZER=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}
TIMEOUT=${FUZZ_TIMEOUT:-60}
case $SANITIZER in
address) ZSAN=-Zsanitizer=address ;;
none) ZSAN= ;;
*) echo "FUZZ_SANITIZER must be address or none" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR=$OUT/build-$SANITIZER
export RUSTC_BOOTSTRAP=1
# --target $HOST below keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing $ZSAN \
-Cforce-frame-pointers -Cdebug-assertions -Coverflow-checks"
export RUST_BACKTRACE=0

echo "==> build the fuzz targets (release, debug assertions, sanitizer: $SANITIZER, libFuzzer coverage)"
cargo build --manifest-path fuzz/Cargo.toml --release --target "$HOST" --locked --bins

printf 'target\tseconds\tsanitizer\texecutions\tcoverage\tfeatures\tcorpus\tcrashes\n' >"$OUT/last.tsv"
fuzz_one() {
    local t=$1 bin=$CARGO_TARGET_DIR/$HOST/release/$1
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    local seeds=()
    [[ -d fuzz/corpus/$t ]] && seeds=("fuzz/corpus/$t")
    local log=$OUT/$t.log rc=0
    echo "==> fuzz $t for ${SECS}s (log: $log)"
    # detect_leaks: the targets free what they load; rss/malloc limits: a runaway
    # allocation is a finding, not a machine-wide OOM.
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        "$bin" "$OUT/corpus/$t" "${seeds[@]}" -max_total_time="$SECS" -timeout="$TIMEOUT" \
        -rss_limit_mb=6144 -malloc_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$t/" >"$log" 2>&1 || rc=$?
    local execs last cov ft corp crashes=0
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    if [[ $rc -ne 0 ]]; then
        crashes=1
        echo "FUZZ FAILURE in $t (exit $rc): the input is in $OUT/artifacts/$t/; the log's end:" >&2
        tail -40 "$log" >&2
    fi
    local line
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$t" "$SECS" "$SANITIZER" "${execs:-0}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")
    echo "$line" | tee -a "$OUT/last.tsv"
    printf '%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo -)" "$line" >>"$OUT/runs.tsv"
    return $rc
}
for t in "${TARGETS[@]}"; do
    [[ -x $CARGO_TARGET_DIR/$HOST/release/$t ]] || { echo "unknown fuzz target: $t (have: loader c_api tokenizer kernels)" >&2; exit 2; }
done
status=0
pids=()
for t in "${TARGETS[@]}"; do
    fuzz_one "$t" &
    pids+=($!)
    if [[ ${#pids[@]} -ge $JOBS ]]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
