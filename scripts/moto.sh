#!/usr/bin/env bash
# Runs a moto S3 server on 127.0.0.1 for the Tier 2 tests (crates/aof2-s3-local, which the
# tests reach as support::s3, reads AOF2_TEST_S3_ENDPOINT and then uses it instead of its
# in-process server).
#
#   scripts/moto.sh start        start (or reuse) a server; prints its endpoint
#   scripts/moto.sh stop         stop the server started by `start`
#   scripts/moto.sh status       print the endpoint if running, exit 1 otherwise
#   scripts/moto.sh env          print `export AOF2_TEST_S3_ENDPOINT=...` for eval
#   scripts/moto.sh run CMD...   start, run CMD with AOF2_TEST_S3_ENDPOINT set, stop again
#                                (only if this call started it); exits with CMD's status
#
# Example (fault tests need the in-process server, so filter them out):
#   scripts/moto.sh run cargo nextest run -p aof2 --test s3_harness -E 'not test(/fault_/)'
#
# State (pid, endpoint, log) lives in $AOF2_MOTO_DIR, default target/moto. Ports are tried from
# $AOF2_MOTO_PORT (default 5123) upwards. moto is installed with pip when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

state_dir=${AOF2_MOTO_DIR:-target/moto}
pid_file=$state_dir/moto.pid
endpoint_file=$state_dir/endpoint
log_file=$state_dir/moto.log
first_port=${AOF2_MOTO_PORT:-5123}
port_attempts=20
startup_timeout_seconds=60

# Succeeds when $1 answers an HTTP request (any status).
answers_http() {
  python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=2)
except urllib.error.HTTPError:
    pass
EOF
}

# Succeeds when 127.0.0.1:$1 can be bound, i.e. nothing listens there.
port_is_free() {
  python3 - "$1" <<'EOF' >/dev/null 2>&1
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
EOF
}

running_endpoint() {
  [[ -f $pid_file && -f $endpoint_file ]] || return 1
  kill -0 "$(cat "$pid_file")" 2>/dev/null || return 1
  local endpoint
  endpoint=$(cat "$endpoint_file")
  answers_http "$endpoint" || return 1
  echo "$endpoint"
}

ensure_moto() {
  if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    echo "installing moto[server] with pip" >&2
    python3 -m pip install --quiet 'moto[server]'
  fi
}

start() {
  if running_endpoint; then
    return 0
  fi
  ensure_moto
  mkdir -p "$state_dir"
  local port=$first_port attempt
  for ((attempt = 0; attempt < port_attempts; attempt++)); do
    port_is_free "$port" && break
    port=$((port + 1))
  done
  if ! port_is_free "$port"; then
    echo "no free port in $first_port..$port" >&2
    return 1
  fi
  local endpoint=http://127.0.0.1:$port
  # Own session, so the server outlives this script and its terminal.
  setsid python3 -m moto.server -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pid_file"
  echo "$endpoint" >"$endpoint_file"
  local deadline=$((SECONDS + startup_timeout_seconds))
  until answers_http "$endpoint"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "moto exited during startup; log follows" >&2
      cat "$log_file" >&2
      rm -f "$pid_file" "$endpoint_file"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "moto did not answer on $endpoint within ${startup_timeout_seconds}s" >&2
      stop
      return 1
    fi
    sleep 0.2
  done
  echo "moto $(python3 -c 'import moto; print(moto.__version__)') pid $pid at $endpoint" >&2
  echo "$endpoint"
}

stop() {
  [[ -f $pid_file ]] || return 0
  local pid
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    local waited
    for ((waited = 0; waited < 50; waited++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
    fi
  fi
  rm -f "$pid_file" "$endpoint_file"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) running_endpoint ;;
  env) echo "export AOF2_TEST_S3_ENDPOINT=$(start)" ;;
  run)
    shift
    [[ $# -gt 0 ]] || { echo "usage: $0 run CMD..." >&2; exit 2; }
    started_here=false
    if ! endpoint=$(running_endpoint); then
      endpoint=$(start)
      started_here=true
    fi
    status=0
    AOF2_TEST_S3_ENDPOINT=$endpoint "$@" || status=$?
    if $started_here; then
      stop
    fi
    exit "$status"
    ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
