#!/usr/bin/env bash
# Instructions troupe executes per request, under callgrind (repeatable on a noisy machine,
# where wrk's req/s are not): the release binary serves N and then 2N requests of PATH on one
# keep-alive connection; the difference over N cancels start-up and shutdown.
#
#   scripts/instructions_per_request.sh BINARY DATABASE_URL PATH [N] [VAR=VALUE…]
#   e.g. scripts/instructions_per_request.sh target/release/troupe \
#          'postgres://postgres@127.0.0.1:5432/bench?sslmode=disable' '/users/{id}' 2000
#
# `{id}` in PATH becomes an id from 1 to 10000 (a database seeded as the bench seeds it).
# Extra VAR=VALUE pairs go to troupe's environment (TROUPE_LOG_FORMAT=json, say).
set -euo pipefail
bin=$1 url=$2 path=$3 n=${4:-2000}
shift $(( $# < 4 ? $# : 4 ))
port=18091

run() { # COUNT: callgrind's instruction total for troupe serving COUNT requests
  local count=$1 dir
  shift
  dir=$(mktemp -d)
  env -i PATH="$PATH" TROUPE_BIND=127.0.0.1:$port TROUPE_WORKERS=1 TROUPE_CPU_THREADS=1 \
    DATABASE_URL="$url" TROUPE_UPLOAD_DIR="$dir/uploads" TROUPE_DRAIN_MS=0 RUST_LOG=info "$@" \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf "localhost:$port/ping" >/dev/null && break; sleep 0.2; done
  for i in $(seq "$count"); do
    echo "url = \"http://127.0.0.1:$port${path//\{id\}/$(( (i * 7919) % 10000 + 1 ))}\""
    echo 'output = /dev/null'
  done >"$dir/urls"
  curl -s -K "$dir/urls"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  grep -o '^summary: [0-9]*' "$dir/cg.out" | cut -d' ' -f2
  rm -rf "$dir"
}

once=$(run "$n" "$@")
twice=$(run $((2 * n)) "$@")
echo "$path: $(( (twice - once) / n )) instructions per request ($n: $once, $((2 * n)): $twice)"
