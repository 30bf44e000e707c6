#!/usr/bin/env bash
# Run the Kafka-marked tests N times in a row on a fresh clone of HEAD, against a
# broker of its own, and count green, failed and hung runs (issue 12, item 6:
# "a CI that never flakes"). Quarantines nothing: every run is the full -m kafka set.
#
# usage: tools/ci/kafka-loop.sh [N]        (default N=20)
# env:   UNTIL=HH:MM    start no run after this UTC time (the loop stops early)
#        RUN_TIMEOUT=s  wall-clock bound of one run (default 900; pytest-timeout's
#                       600 s per test fires first and prints every thread's stack)
#        KAFKA_LIB=dir  resolved Kafka jars to copy (default: this checkout's
#                       tools/kafka/lib, else the broker tool resolves them with mvn)
#        KEEP=1         keep the clone, its venv and the broker's data (logs are kept always)
#        OUT=dir        where the run logs and summary go (default: the temp dir)
#        REF=rev        the commit to test (default HEAD): a loop longer than one sitting
#                       is continued later at the same commit
#        FIRST=k        number the runs from k (default 1), for such a continuation
#
# A run is "hung" when the outer timeout killed it or pytest-timeout fired, "failed"
# when pytest exited non-zero otherwise, "green" when it exited 0. The summary ends
# with one line: `kafka-loop: N runs at <sha>: G green, F failed, H hung`.
set -euo pipefail

N=${1:-20}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
SRC=$(git rev-parse --show-toplevel)
SHA=$(git -C "$SRC" rev-parse "${REF:-HEAD}^{commit}")
FIRST=${FIRST:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kafka-loop.XXXXXX")
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
CLONE="$WORK/repo"
BROKER_DIR="$WORK/kafka"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$SUMMARY"; }

cleanup() {
    if [[ -x "$CLONE/.venv/bin/python" ]]; then
        "$CLONE/.venv/bin/python" "$CLONE/tools/kafka/broker.py" down --dir "$BROKER_DIR" \
            >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$CLONE" "$BROKER_DIR"; fi  # the logs stay
}
trap cleanup EXIT

log "kafka-loop: $N runs of \`pytest -m kafka\` at $SHA (clone in $CLONE)"
git clone -q --no-local "$SRC" "$CLONE"
git -C "$CLONE" checkout -q --detach "$SHA"

lib=${KAFKA_LIB:-$SRC/tools/kafka/lib}
if [[ -f "$lib/.resolved" ]]; then
    cp -r "$lib" "$CLONE/tools/kafka/lib"
fi

python3 -m venv "$CLONE/.venv"
(cd "$CLONE" && .venv/bin/pip install -q -e '.[dev]') >"$OUT/install.log" 2>&1 \
    || { log "pip install failed, see $OUT/install.log"; exit 2; }

BOOTSTRAP=$("$CLONE/.venv/bin/python" "$CLONE/tools/kafka/broker.py" up --dir "$BROKER_DIR" \
    2>"$OUT/broker-up.log" | tail -n 1)
log "broker at $BOOTSTRAP ($BROKER_DIR)"

green=0 failed=0 hung=0 runs=0
durations=()
for ((i = FIRST; i <= N; i++)); do
    if [[ -n "${UNTIL:-}" && "$(date -u +%H:%M)" > "$UNTIL" ]]; then
        log "stopping before run $i: past UNTIL=$UNTIL"
        break
    fi
    runlog="$OUT/run-$i.log"
    start=$(date +%s.%N)
    rc=0
    (cd "$CLONE" && OFFSETLEDGER_REQUIRE_KAFKA=1 CI=true KAFKA_BOOTSTRAP_SERVERS="$BOOTSTRAP" \
        timeout --kill-after=30 "$RUN_TIMEOUT" .venv/bin/python -m pytest -m kafka -q) \
        >"$runlog" 2>&1 || rc=$?
    secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
    durations+=("$secs")
    runs=$((runs + 1))
    if [[ $rc == 124 || $rc == 137 ]] || grep -q '^+\++ Timeout +\++$' "$runlog"; then
        hung=$((hung + 1)); verdict=HUNG
    elif [[ $rc == 0 ]]; then
        green=$((green + 1)); verdict=green
    else
        failed=$((failed + 1)); verdict=FAILED
    fi
    tail_line=$(grep -E '(passed|failed|error)' "$runlog" | tail -n 1 || true)
    log "run $i: $verdict rc=$rc ${secs}s ${tail_line}"
    if [[ $verdict != green ]]; then
        grep -E '^(FAILED|ERROR) |Timeout|Stack of' "$runlog" | head -n 20 | sed 's/^/    /' \
            | tee -a "$SUMMARY"
    fi
done

if ((runs > 0)); then
    sorted=$(printf '%s\n' "${durations[@]}" | sort -n)
    median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
    log "durations (s): min $(echo "$sorted" | head -n1) median $median max $(echo "$sorted" | tail -n1)"
fi
log "kafka-loop: $runs runs at ${SHA:0:7}: $green green, $failed failed, $hung hung (logs in $OUT)"
[[ $failed == 0 && $hung == 0 ]]
