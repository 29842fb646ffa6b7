#!/usr/bin/env bash
# Counts the instructions a worker spends on small deliveries, with valgrind's callgrind:
# a figure that does not depend on the machine's speed or load, unlike `make bench`'s
# milliseconds (±10 % between runs on two cores). Compare two builds by their counts.
#
#   scripts/callgrind-worker.sh [BIN] [DELIVERIES]
#
# BIN defaults to target/release/courier (build it and courier-bench first, as `make bench`
# does); DELIVERIES to 300. The bench's end-to-end runs with one worker drain that many
# 1,000-row CSV deliveries while the worker runs under callgrind; one line per run gives
# the worker's instructions, start-up included (the same for both builds), with and
# without the bench's metrics scrapes. Profiles stay in
# the printed directory for `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/courier}")
deliveries=${2:-300}
command -v valgrind >/dev/null || { echo "callgrind-worker: valgrind is not installed" >&2; exit 1; }
out=$(mktemp -d /tmp/courier-callgrind.XXXXXX)
# The bench starts its processes with a clean environment, so the wrapper carries its paths.
cat >"$out/courier" <<WRAP
#!/usr/bin/env bash
[ "\$1" = worker ] || exec "$bin" "\$@"
valgrind --tool=callgrind --callgrind-out-file="$out/worker.%p" "$bin" "\$@" &
vg=\$!
me=\$\$
# The bench kills the worker with SIGKILL, which callgrind cannot see: when this wrapper
# is gone, dump the counts, then end the worker.
( while kill -0 \$me 2>/dev/null; do sleep 0.1; done
  callgrind_control -d \$vg >/dev/null 2>&1 || true; sleep 1; kill -KILL \$vg 2>/dev/null ) &
wait \$vg
WRAP
chmod +x "$out/courier"
BENCH_COURIER_BIN="$out/courier" BENCH_ONLY=e2e BENCH_WORKERS=1 \
  BENCH_SMALL_DELIVERIES="$deliveries" target/release/courier-bench >"$out/bench.md" 2>"$out/bench.log"
# The bench scrapes the worker's /metrics every 20 ms: that part follows wall time (a
# loaded machine runs longer and scrapes more), so it is taken out of the second figure.
for f in "$out"/worker.*.1; do
  [ -s "$f" ] || continue
  total=$(sed -n 's/^summary: //p' "$f")
  scrapes=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null \
    | awk '/PrometheusHandle::render/ { gsub(",", "", $1); print $1; exit }')
  printf '%s instructions, %s without the metrics scrapes  %s\n' \
    "$total" "$((total - ${scrapes:-0}))" "$f"
done
echo "callgrind-worker: the bench's table is in $out/bench.md; one profile per run above"
