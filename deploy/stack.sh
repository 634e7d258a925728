#!/usr/bin/env bash
# Local Portcullis stack: Postgres + Redis (left running), demo upstream, control plane, gateway.
#
# Usage:
#   deploy/stack.sh [up]                 build, start everything in the background, print how to use it
#   deploy/stack.sh up --foreground      same, then wait; Ctrl-C stops what was started (or STACK_FOREGROUND=1)
#   deploy/stack.sh status               show recorded processes and health
#   deploy/stack.sh down [--purge]       stop recorded processes (TERM, KILL after 5 s); Postgres/Redis stay up.
#                                        --purge also drops database portcullis_stack and the state dir.
# Env: PORTCULLIS_STACK_DIR (state dir, default /var/lib/portcullis-stack: secrets, logs, PIDs and the
#      gateway's state, kept beside the database they belong to, across reboots), CARGO_TARGET_DIR
#      (default /var/tmp/portcullis-target), STACK_NO_BUILD=1 (use existing binaries),
#      RUST_LOG (passed through to the binaries).
# Ports (127.0.0.1): management API 7080, sync 7443, proxy 8080, HTTPS proxy 8443, gateway admin 9080,
# demo upstream 8099.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$HERE/lib/services.sh"

STATE="${PORTCULLIS_STACK_DIR:-/var/lib/portcullis-stack}"
# Where versions before 0.13 kept it (lost with /tmp, while the database stayed).
OLD_STATE=/tmp/portcullis-stack
PIDDIR="$STATE/pids"
LOGDIR="$STATE/logs"
DB_NAME=portcullis_stack
API_ADDR=127.0.0.1:7080
SYNC_ADDR=127.0.0.1:7443
PROXY_ADDR=127.0.0.1:8080
GW_ADMIN_ADDR=127.0.0.1:9080
UPSTREAM_PORT=8099
API="http://$API_ADDR"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portcullis-target}"
BIN="$CARGO_TARGET_DIR/release"

# ---------------------------------------------------------------------------------------------
# process bookkeeping: $PIDDIR/NAME.pid holds "PID STARTTIME" (start time guards against PID reuse)
LAST_PID=""
start_bg() { # start_bg NAME CMD...   (env assignments before the call reach the process; sets LAST_PID)
  local name="$1" pid
  shift
  nohup "$@" >"$LOGDIR/$name.log" 2>&1 </dev/null &
  pid=$!
  LAST_PID=$pid
  printf '%s %s\n' "$pid" "$(proc_start_time "$pid" || echo 0)" >"$PIDDIR/$name.pid"
  log "    started $name (pid $pid, log $LOGDIR/$name.log)"
}
# recorded_pid NAME: prints the PID if the recorded process is still the one we started
recorded_pid() {
  local f="$PIDDIR/$1.pid" pid st
  [ -f "$f" ] || return 1
  read -r pid st <"$f" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(proc_start_time "$pid" || echo x)" = "$st" ] || return 1
  echo "$pid"
}
all_names() {
  local f
  for f in "$PIDDIR"/*.pid; do [ -e "$f" ] && basename "$f" .pid; done
  return 0
}

do_down() {
  local name pid pids=() names=()
  [ -d "$PIDDIR" ] || { log "nothing recorded in $PIDDIR"; return 0; }
  for name in $(all_names); do
    if pid="$(recorded_pid "$name")"; then
      pids+=("$pid")
      names+=("$name($pid)")
    fi
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    log "stopping ${names[*]}"
    stop_pids "${pids[@]}"
  else
    log "no recorded process is running"
  fi
  rm -f "$PIDDIR"/*.pid
}

do_purge() {
  if pg_login_ok; then
    log "dropping database $DB_NAME"
    pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c "drop database if exists $DB_NAME with (force)" >/dev/null
  fi
  log "removing $STATE"
  rm -rf "$STATE"
}

do_status() {
  local name pid
  for name in $(all_names); do
    if pid="$(recorded_pid "$name")"; then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
  done
  echo "control plane  $API/hello -> $(http_code "$API/hello")"
  echo "gateway ready  http://$GW_ADMIN_ADDR/ready -> $(http_code "http://$GW_ADMIN_ADDR/ready")"
  echo "proxy          http://$PROXY_ADDR/demo/ -> $(http_code "http://$PROXY_ADDR/demo/")"
}

# ---------------------------------------------------------------------------------------------
write_upstream() {
  cat >"$STATE/upstream.py" <<'PY'
# Demo upstream: answers every request with a JSON echo of method, path and headers.
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        out = json.dumps({"upstream": "portcullis-demo", "method": self.command, "path": self.path,
                          "headers": dict(self.headers), "body": body}, indent=1).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one
    def log_message(self, *args):
        pass

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
PY
}

secret_file() { # secret_file NAME: prints the secret stored in $STATE/NAME, generating it once
  # 32 random bytes as 64 hex characters; the CP and the gateway refuse secrets under 32 bytes,
  # so a shorter one left by an older version of this script is replaced.
  local f="$STATE/$1"
  if [ ! -s "$f" ] || [ "$(wc -c <"$f")" -lt 33 ]; then
    (umask 077 && openssl rand -hex 32 >"$f")
  fi
  cat "$f"
}

# adopt_old_state: secrets an older version of this script left in /tmp move to $STATE once.
adopt_old_state() {
  local f moved=0
  [ "$STATE" != "$OLD_STATE" ] && [ -d "$OLD_STATE" ] || return 0
  for f in admin_secret encryption_secret ca_secret; do
    if [ -s "$OLD_STATE/$f" ] && [ ! -s "$STATE/$f" ]; then
      (umask 077 && cp "$OLD_STATE/$f" "$STATE/$f")
      moved=1
    fi
  done
  [ "$moved" = 1 ] && log "    moved the secrets of $OLD_STATE to $STATE (the stack's state now lives there)"
  return 0
}

# check_state_matches_database: a database whose node CA was sealed with secrets that are gone
# (state dir deleted, or /tmp wiped by a reboot under an older version) cannot be used: say so,
# and what to run, instead of letting the control plane fail on it.
check_state_matches_database() {
  local f missing=()
  for f in encryption_secret ca_secret; do
    [ -s "$STATE/$f" ] || missing+=("$f")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  local has_ca
  has_ca="$(pg_psql "$(pg_url_for "$DB_NAME")" -c "select count(*) from pg_tables where tablename = 'node_ca'" 2>/dev/null || echo 0)"
  if [ "$has_ca" = 1 ]; then
    has_ca="$(pg_psql "$(pg_url_for "$DB_NAME")" -c "select count(*) from node_ca" 2>/dev/null || echo 0)"
  fi
  if [ "$has_ca" != 0 ]; then
    die "database $DB_NAME holds a node CA sealed with secrets that are no longer in $STATE (${missing[*]} missing). Run 'deploy/stack.sh down --purge' (drops the database and $STATE), then 'deploy/stack.sh up'."
  fi
}

# explain_cp_failure: the control plane's own refusal of the stored state, turned into the fix.
explain_cp_failure() {
  if grep -q "cannot be opened" "$LOGDIR/cp.log" 2>/dev/null; then
    log "!! the control plane cannot open the state stored in database $DB_NAME with the secrets in $STATE."
    log "!! Run 'deploy/stack.sh down --purge' (drops the database and $STATE), then 'deploy/stack.sh up'."
  fi
}

show_logs_tail() {
  local f
  for f in "$LOGDIR"/*.log; do
    [ -s "$f" ] || continue
    log "--- last lines of $f"
    tail -n 15 "$f" >&2
  done
}

UP_DONE=0
on_up_exit() {
  local rc=$?
  if [ "$UP_DONE" = 0 ]; then
    step_report "$rc"
    log "!! up did not complete: stopping what it started"
    show_logs_tail
    do_down
  fi
}

do_up() {
  local foreground="${STACK_FOREGROUND:-0}" arg
  for arg in "$@"; do
    case "$arg" in
      --foreground | -f) foreground=1 ;;
      *) die "unknown option for up: $arg" ;;
    esac
  done
  mkdir -p "$PIDDIR" "$LOGDIR" "$STATE/gw-state"
  chmod 700 "$STATE"
  trap on_up_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if [ -n "$(all_names)" ]; then
    log "==> a previous stack is recorded in $PIDDIR: stopping it first"
    do_down
  fi
  local p
  for p in 7080 7443 8080 8443 9080 "$UPSTREAM_PORT"; do
    port_open "$p" && die "127.0.0.1:$p is already in use by a process this script did not record"
  done

  step_begin "tools and services"
  ensure_cmd curl curl
  ensure_cmd openssl openssl
  ensure_cmd python3 python3
  ensure_cargo
  ensure_protoc
  ensure_postgres
  ensure_redis
  ensure_database "$DB_NAME"
  step_end

  if [ "${STACK_NO_BUILD:-0}" = 1 ]; then
    log "==> STACK_NO_BUILD=1: using binaries in $BIN"
  else
    step_begin "cargo build --release"
    (cd "$ROOT" && cargo build --release --locked -p portcullis-control-plane -p portcullis-data-plane)
    step_end
  fi
  if [ ! -x "$BIN/portcullis-cp" ] || [ ! -x "$BIN/portcullis-gw" ]; then die "binaries missing in $BIN"; fi

  adopt_old_state
  check_state_matches_database
  local admin_secret enc_secret ca_secret
  admin_secret="$(secret_file admin_secret)"
  enc_secret="$(secret_file encryption_secret)"
  # Seals the node CA key; only the control plane holds it (the gateway never sees it).
  ca_secret="$(secret_file ca_secret)"

  step_begin "demo upstream"
  write_upstream
  start_bg upstream python3 "$STATE/upstream.py" 127.0.0.1 "$UPSTREAM_PORT"
  wait_http_code 200 10 "$LAST_PID" "http://127.0.0.1:$UPSTREAM_PORT/"
  step_end

  step_begin "control plane"
  PORTCULLIS_DATABASE_URL="$(pg_url_for "$DB_NAME")" \
    PORTCULLIS_ADMIN_SECRET="$admin_secret" \
    PORTCULLIS_ENCRYPTION_SECRET="$enc_secret" \
    PORTCULLIS_CA_SECRET="$ca_secret" \
    start_bg cp "$BIN/portcullis-cp" serve --api-listen "$API_ADDR" --sync-listen "$SYNC_ADDR"
  wait_http_code 200 30 "$LAST_PID" "$API/hello" || { explain_cp_failure; exit 1; }
  step_end

  step_begin "gateway"
  bootstrap_token "$API" "$admin_secret" default
  (umask 077 && printf '%s\n' "$API_BODY" >"$STATE/bootstrap.json")
  PORTCULLIS_BOOTSTRAP_TOKEN="$BOOT_TOKEN" \
    PORTCULLIS_ENCRYPTION_SECRET="$enc_secret" \
    PORTCULLIS_REDIS_URL="${PORTCULLIS_REDIS_URL:-redis://127.0.0.1:6379}" \
    PORTCULLIS_REDIS_PREFIX="portcullis-stack:" \
    start_bg gw "$BIN/portcullis-gw" run --listen "$PROXY_ADDR" --admin-listen "$GW_ADMIN_ADDR" \
    --tls-listen 127.0.0.1:8443 \
    --control-plane "https://$SYNC_ADDR" --ca-hash "$BOOT_CA_HASH" --state-dir "$STATE/gw-state"
  GW_PID="$LAST_PID"
  wait_http_code 200 30 "$GW_PID" "http://$GW_ADMIN_ADDR/ready"
  step_end

  step_begin "demo API /demo/"
  tyk_api_upsert "$API" "$admin_secret" demo \
    '{"name":"demo","api_id":"demo","use_keyless":true,"active":true,"proxy":{"listen_path":"/demo/","target_url":"http://127.0.0.1:'"$UPSTREAM_PORT"'/","strip_listen_path":true}}'
  wait_http_code 200 30 "$GW_PID" "http://$PROXY_ADDR/demo/"
  # A protected API and a key limited to 5 requests a minute, to show auth and rate limits.
  tyk_api_upsert "$API" "$admin_secret" demo-auth \
    '{"name":"demo-auth","api_id":"demo-auth","use_keyless":false,"active":true,"proxy":{"listen_path":"/demo-auth/","target_url":"http://127.0.0.1:'"$UPSTREAM_PORT"'/","strip_listen_path":true}}'
  api_call POST "$API/tyk/keys/demo-key" "$admin_secret" \
    '{"rate":5,"per":60,"quota_max":-1,"access_rights":{"demo-auth":{"api_id":"demo-auth"}}}'
  [ "$API_CODE" = 200 ] || die "creating the demo key: $API_CODE $API_BODY"
  step_end

  UP_DONE=1
  trap - EXIT INT TERM
  step_report 0

  cat <<EOF

Portcullis stack is up (state: $STATE)
  proxy request:     curl -i http://$PROXY_ADDR/demo/hello
  with a key:        curl -i -H "Authorization: demo-key" http://$PROXY_ADDR/demo-auth/hello   (5 a minute, then 429)
  management API:    curl -s -H "X-Tyk-Authorization: \$(cat $STATE/admin_secret)" $API/tyk/apis
  gateway readiness: curl -i http://$GW_ADMIN_ADDR/ready
  secrets:           $STATE/admin_secret, $STATE/encryption_secret, $STATE/ca_secret (reused on re-runs)
  logs:              $LOGDIR/{upstream,cp,gw}.log
  PIDs:              $PIDDIR/{upstream,cp,gw}.pid
  stop:              $0 down
EOF

  if [ "$foreground" = 1 ]; then
    local pids=() name
    for name in upstream cp gw; do pids+=("$(recorded_pid "$name")"); done
    trap 'log ""; log "stopping (signal)"; do_down; exit 0' INT TERM
    log "running in the foreground: Ctrl-C stops the stack"
    local rc=0
    wait -n "${pids[@]}" || rc=$?
    log "!! a stack process exited (status $rc): stopping the rest"
    show_logs_tail
    do_down
    exit 1
  fi
}

cmd="${1:-up}"
[ "$#" -gt 0 ] && shift
case "$cmd" in
  up) do_up "$@" ;;
  down)
    do_down
    if [ "${1:-}" = --purge ]; then do_purge; fi
    ;;
  status) do_status ;;
  -h | --help | help) sed -n '2,13p' "$0" ;;
  *) die "unknown command '$cmd' (use: up [--foreground] | down [--purge] | status)" ;;
esac
