#!/usr/bin/env bash
# Courier end to end on this machine: Redis and Garage on loopback, the control API and two
# workers, one destination per format, a few sample mapping jobs through the API and the CLI.
# Prints the keys delivered and where to see the metrics, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/debug"
API_PORT=${DEMO_API_PORT:-8080}
METRICS_PORTS=(${DEMO_METRICS_PORTS:-9000 9001})
RUN_DIR=$(mktemp -d -t courier-demo.XXXXXX)
PIDS=()

cleanup() {
  local code=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$code" -ne 0 ]; then
    echo "demo failed; logs kept in $RUN_DIR" >&2
    tail -n 20 "$RUN_DIR"/*.log >&2 2>/dev/null || true
  else
    rm -rf "$RUN_DIR"
  fi
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing what is missing"
scripts/ensure-tools.sh

say "Building courier"
cargo build --quiet -p courier -p courier-test-support --bins

say "Starting Redis and Garage on loopback"
"$BIN/courier-devstack" --env-file "$RUN_DIR/stack.env" --bucket courier-demo >"$RUN_DIR/devstack.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do [ -s "$RUN_DIR/stack.env" ] && break; sleep 0.1; done
[ -s "$RUN_DIR/stack.env" ] || { echo "the dev stack did not start" >&2; exit 1; }
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"
echo "Redis  $REDIS_URL"
echo "Garage $S3_ENDPOINT (bucket $S3_BUCKET)"

TOKEN="demo_$(openssl rand -hex 16)"
export REDIS_URL
export COURIER_SECRET_KEY=$(openssl rand -base64 32)
export COURIER_API_TOKENS="$TOKEN=demo"
export COURIER_API_LISTEN="127.0.0.1:$API_PORT"
# Garage runs on loopback here: allow exactly its address and port for tenant traffic.
export COURIER_EGRESS_ALLOW="${S3_ENDPOINT#http://}"

say "Starting the API and two workers"
"$BIN/courier" api >"$RUN_DIR/api.log" 2>&1 &
PIDS+=($!)
for i in 0 1; do
  COURIER_METRICS_LISTEN="127.0.0.1:${METRICS_PORTS[$i]}" COURIER_WORKER_NAME="demo-worker-$i-$$" \
    "$BIN/courier" worker >"$RUN_DIR/worker-$i.log" 2>&1 &
  PIDS+=($!)
done
API="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 200); do curl -fs "$API/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "$API/healthz" >/dev/null || { echo "the API did not start" >&2; exit 1; }

api() { # method path [body]
  curl -sS -X "$1" "$API$2" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' ${3:+--data "$3"}
}

say "Creating one destination per format"
declare -A DEST
for spec in CSV:NONE JSON:NONE NDJSON:GZIP XLSX:NONE PARQUET:NONE; do
  format=${spec%%:*}; compression=${spec##*:}
  body=$(jq -n --arg f "$format" --arg c "$compression" --arg b "$S3_BUCKET" --arg r "$S3_REGION" \
    --arg k "$S3_ACCESS_KEY_ID" --arg s "$S3_SECRET_ACCESS_KEY" --arg e "$S3_ENDPOINT" \
    '{type:"S3", name:("demo " + $f), format:$f, compression:$c, status:"ACTIVE",
      s3:{bucket:$b, region:$r, accessKeyId:$k, secretAccessKey:$s, endpointUrl:$e,
          pathPrefix:("incoming/" + ($f|ascii_downcase) + "/")}}')
  resp=$(api POST /api/v1/delivery-destinations "$body")
  DEST[$format]=$(jq -r .id <<<"$resp")
  echo "$format destination ${DEST[$format]}: $(jq -c '{format, compression, s3: {bucket: .s3.bucket, pathPrefix: .s3.pathPrefix, accessKeyId: .s3.accessKeyId}}' <<<"$resp")"
done

ROWS='[{"hotelId":"H-1","name":"Hôtel \"Le Petit\", Paris","score":9.5,"rooms":120,"open":true},
       {"hotelId":"H-2","name":"Ryokan 🌸 Kyoto","score":8.75,"rooms":14,"open":false,"tags":["onsen","garden"]}]'

say "Enqueueing sample mapping jobs"
IDS=()
for format in CSV JSON NDJSON XLSX PARQUET; do
  body=$(jq -n --arg d "${DEST[$format]}" --argjson rows "$ROWS" --arg inv "INV-$format" \
    '{destinationId:$d, jobId:("job-" + $inv), partnerInventoryId:$inv, completedAt:"2026-06-07T10:00:00Z", rows:$rows}')
  id=$(api POST /api/v1/deliveries "$body" | jq -r .id)
  echo "API  → $id ($format)"
  IDS+=("$id")
done
printf '%s\n' "$ROWS" | jq -c '.[]' >"$RUN_DIR/rows.ndjson"
id=$("$BIN/courier" enqueue --tenant demo --destination "${DEST[CSV]}" --job-id job-cli \
  --partner-inventory-id INV-CLI --completed-at 2026-06-07T23:30:00-02:00 --rows "$RUN_DIR/rows.ndjson")
echo "CLI  → $id (CSV, rows from an NDJSON file)"
IDS+=("$id")

# Polls delivery $1 until it is DELIVERED or FAILED (30 s at most); sets rec and status.
wait_final() {
  for _ in $(seq 1 300); do
    rec=$(api GET "/api/v1/deliveries/$1")
    status=$(jq -r .status <<<"$rec")
    [ "$status" = DELIVERED ] || [ "$status" = FAILED ] && return
    sleep 0.1
  done
}

say "Deliveries"
for id in "${IDS[@]}"; do
  wait_final "$id"
  jq -r '"\(.status)  s3://\(.bucket)/\(.key)  \(.bytes) bytes  etag \(.etag)  attempts \(.attempts|length)  \(.error.code // "")"' <<<"$rec"
  [ "$status" = DELIVERED ] || { echo "delivery $id did not succeed" >&2; exit 1; }
done

say "A batched destination: every 5 s window's deliveries in one gzip NDJSON object"
body=$(jq -n --arg b "$S3_BUCKET" --arg r "$S3_REGION" --arg k "$S3_ACCESS_KEY_ID" \
  --arg s "$S3_SECRET_ACCESS_KEY" --arg e "$S3_ENDPOINT" \
  '{type:"S3", name:"demo batched", format:"NDJSON", compression:"GZIP", status:"ACTIVE",
    batch:{windowSeconds:5},
    s3:{bucket:$b, region:$r, accessKeyId:$k, secretAccessKey:$s, endpointUrl:$e,
        pathPrefix:"incoming/batched/"}}')
BATCHED=$(api POST /api/v1/delivery-destinations "$body" | jq -r .id)
echo "batched destination $BATCHED"
BIDS=()
for n in 1 2 3; do
  body=$(jq -n --arg d "$BATCHED" --argjson rows "$ROWS" --arg inv "INV-B$n" \
    '{destinationId:$d, jobId:("job-" + $inv), partnerInventoryId:$inv, completedAt:"2026-06-07T10:00:00Z", rows:$rows}')
  resp=$(api POST /api/v1/deliveries "$body")
  echo "API  → $(jq -r .id <<<"$resp") $(jq -r .status <<<"$resp") $(jq -c '.batch // {} | {windowStart, windowEnd}' <<<"$resp")"
  BIDS+=("$(jq -r .id <<<"$resp")")
done
for id in "${BIDS[@]}"; do
  wait_final "$id"
  jq -r '"\(.status)  s3://\(.bucket)/\(.key)  lines \(.batch.firstLine)-\(.batch.lastLine)  \(.error.code // "")"' <<<"$rec"
  [ "$status" = DELIVERED ] || { echo "batched delivery $id did not succeed" >&2; exit 1; }
done
api GET "/api/v1/batches?destinationId=$BATCHED" | jq -c '.items[] | {key, rows, bytes, status}'

say "Metrics"
echo "Worker metrics: http://127.0.0.1:${METRICS_PORTS[0]}/metrics and http://127.0.0.1:${METRICS_PORTS[1]}/metrics; API: $API/metrics"
for port in "${METRICS_PORTS[@]}"; do
  curl -fs "http://127.0.0.1:$port/metrics" | grep '^courier_deliveries_total' | grep -v ' 0$' || true
done
if [ -n "${DEMO_KEEP_RUNNING:-}" ]; then
  say "Running until Ctrl-C (DEMO_KEEP_RUNNING is set)"
  wait
fi
say "Done; stopping what the demo started"
