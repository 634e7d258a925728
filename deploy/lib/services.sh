# shellcheck shell=bash
# Shared helpers for .ci/run, deploy/stack.sh and tests/bench/run.sh.
# Source it (do not execute it). Assumes bash, Debian 12, root (apt-get is used for missing tools).
#
#   ensure_protoc            protoc (Debian protobuf-compiler), needed to build the workspace
#   ensure_postgres          Postgres answering on 127.0.0.1:5432, postgres@127.0.0.1 without password
#   ensure_redis             Redis answering on 127.0.0.1:6379 (started daemonized, no persistence)
#   ensure_database NAME     CREATE DATABASE NAME if missing
#   step_begin/step_end      timed steps ("==> name" ... "<== name: ok (12s)")
#   api_call, bootstrap_token, tyk_api_upsert, wait_http_code   management-API helpers
#
# Tunables (env): PG_HOST (127.0.0.1) PG_PORT (5432) REDIS_HOST (127.0.0.1) REDIS_PORT (6379)
#                 PORTCULLIS_PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres)

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
PORTCULLIS_PG_ADMIN_URL="${PORTCULLIS_PG_ADMIN_URL:-postgres://postgres@${PG_HOST}:${PG_PORT}/postgres}"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# timed steps
STEP_NAME=""
STEP_T0=0
STEP_TIMINGS=()
step_begin() { STEP_NAME="$1"; STEP_T0=$SECONDS; log "==> $1"; }
step_end() {
  local dt=$((SECONDS - STEP_T0))
  STEP_TIMINGS+=("$(printf '%-28s %5ss' "$STEP_NAME" "$dt")")
  log "<== $STEP_NAME: ok (${dt}s)"
  STEP_NAME=""
}
# Call from an EXIT trap: reports the failing step (if any) and the table of step timings.
step_report() {
  local rc="${1:-0}" t
  if [ -n "$STEP_NAME" ]; then
    log "!! step '$STEP_NAME' failed (exit $rc) after $((SECONDS - STEP_T0))s"
  fi
  if [ "${#STEP_TIMINGS[@]}" -gt 0 ]; then
    log "-- timings"
    for t in "${STEP_TIMINGS[@]}"; do log "   $t"; done
    log "   $(printf '%-28s %5ss' total "$SECONDS")"
  fi
}

# run_quiet WHAT CMD...: runs CMD with output captured; prints the tail only if it fails.
run_quiet() {
  local what="$1" out rc
  shift
  out="$(mktemp)"
  if "$@" >"$out" 2>&1; then
    rm -f "$out"
    return 0
  else
    rc=$?
    log "!! $what failed (exit $rc); last lines:"
    tail -n 40 "$out" >&2
    rm -f "$out"
    return "$rc"
  fi
}

# ---------------------------------------------------------------------------------------------
# packages
APT_UPDATED=0
apt_install() {
  have apt-get || die "apt-get not available: install $* by hand"
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = 0 ]; then
    run_quiet "apt-get update" apt-get update -q
    APT_UPDATED=1
  fi
  log "    apt-get install $*"
  run_quiet "apt-get install $*" apt-get install -y -q --no-install-recommends "$@"
}
# ensure_cmd COMMAND PACKAGE
ensure_cmd() { have "$1" || apt_install "$2"; have "$1" || die "$1 still missing after installing $2"; }

ensure_cargo() {
  if ! have cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH="$HOME/.cargo/bin:$PATH"; export PATH; fi
  have cargo || die "cargo not found (install Rust via rustup first)"
}

ensure_protoc() { ensure_cmd protoc protobuf-compiler; }

# ---------------------------------------------------------------------------------------------
# Postgres
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3 >/dev/null 2>&1; }
pg_psql() { PGCONNECT_TIMEOUT=5 PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -At "$@" </dev/null; }
pg_login_ok() { pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c 'select 1' >/dev/null 2>&1; }
pg_wait() {
  for _ in $(seq 1 "${1:-30}"); do pg_ready && return 0; sleep 1; done
  return 1
}

pg_start_local() {
  # Start (creating it if needed) the local cluster on $PG_PORT. No systemd here: pg_ctlcluster/service.
  local ver name port _rest found=0
  if ! have pg_ctlcluster || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then apt_install postgresql; fi
  while read -r ver name port _rest; do
    [ "$port" = "$PG_PORT" ] || continue
    found=1
    log "    pg_ctlcluster $ver $name start"
    pg_ctlcluster "$ver" "$name" start >/dev/null 2>&1 || true
  done < <(pg_lsclusters -h 2>/dev/null || true)
  if [ "$found" = 0 ]; then
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
    [ -n "$ver" ] || die "no PostgreSQL server installed under /usr/lib/postgresql"
    log "    pg_createcluster $ver main -p $PG_PORT --start"
    run_quiet "pg_createcluster" pg_createcluster "$ver" main -p "$PG_PORT" --start
  fi
  pg_wait 30 && return 0
  log "    pg_ctlcluster did not bring Postgres up; trying 'service postgresql start'"
  service postgresql start >/dev/null 2>&1 || true
  pg_wait 30 || die "Postgres does not answer on $PG_HOST:$PG_PORT (see /var/log/postgresql/)"
}

pg_trust_loopback() {
  # Put 'trust' rules for 127.0.0.1/32 and ::1/128 at the top of pg_hba.conf and reload.
  local hba tmp
  have runuser || die "runuser missing: cannot reach Postgres as the postgres OS user"
  hba="$(runuser -u postgres -- psql -X -At -c 'show hba_file' </dev/null 2>/dev/null)" ||
    die "cannot log in as postgres over the local socket to find pg_hba.conf; fix authentication by hand"
  [ -w "$hba" ] || die "pg_hba.conf ($hba) not writable"
  if ! grep -q '^# portcullis: trust loopback' "$hba"; then
    log "    adding trust rules for 127.0.0.1/32 and ::1/128 to $hba"
    tmp="$(mktemp)"
    {
      echo '# portcullis: trust loopback (added by deploy/lib/services.sh; first match wins)'
      echo 'host    all    all    127.0.0.1/32    trust'
      echo 'host    all    all    ::1/128         trust'
      cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba" # keeps owner and mode
    rm -f "$tmp"
  fi
  runuser -u postgres -- psql -X -q -At -c 'select pg_reload_conf()' </dev/null >/dev/null
  sleep 1
}

ensure_postgres() {
  if ! have pg_isready || ! have psql; then apt_install postgresql-client; fi
  if ! pg_ready; then
    log "    Postgres not answering on $PG_HOST:$PG_PORT: starting it"
    pg_start_local
  fi
  if ! pg_login_ok; then
    pg_trust_loopback
    pg_login_ok || die "cannot run: psql '$PORTCULLIS_PG_ADMIN_URL' -c 'select 1'"
  fi
  log "    postgres ok ($PORTCULLIS_PG_ADMIN_URL)"
}

# ensure_database NAME  (creates it if missing; NAME must be a plain identifier)
ensure_database() {
  local db="$1"
  [[ "$db" =~ ^[a-z_][a-z0-9_]*$ ]] || die "bad database name: $db"
  if [ "$(pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    log "    create database $db"
    pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c "create database $db" >/dev/null
  fi
}
# pg_url_for NAME: the admin URL with the database part replaced
pg_url_for() { printf '%s/%s\n' "${PORTCULLIS_PG_ADMIN_URL%/*}" "$1"; }

# ---------------------------------------------------------------------------------------------
# Redis
redis_ready() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
ensure_redis() {
  have redis-cli || apt_install redis-tools
  if ! redis_ready; then
    have redis-server || apt_install redis-server
    log "    Redis not answering on $REDIS_HOST:$REDIS_PORT: starting redis-server (daemonized, no persistence)"
    redis-server --daemonize yes --save '' --appendonly no \
      --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir /tmp >/dev/null
    for _ in $(seq 1 20); do redis_ready && break; sleep 0.5; done
    redis_ready || die "Redis does not answer on $REDIS_HOST:$REDIS_PORT"
  fi
  log "    redis ok (redis://$REDIS_HOST:$REDIS_PORT)"
}

# ---------------------------------------------------------------------------------------------
# processes and HTTP

# port_open PORT: something listens on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# proc_start_time PID: kernel start time (clock ticks since boot), to tell a PID from a reused one
proc_start_time() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  s="${s##*) }"
  # after "comm) " the fields start at field 3; starttime is field 22
  awk '{print $20}' <<<"$s"
}
# stop_pids PID...: TERM, wait up to 5 s, then KILL what is left
stop_pids() {
  local p alive
  [ "$#" -gt 0 ] || return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      log "    pid $p still alive after 5 s: KILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true; }

# wait_http_code WANT TIMEOUT_S PID URL [curl args...]
# Polls URL until it answers WANT; fails early if PID (may be "") has exited.
wait_http_code() {
  local want="$1" timeout="$2" pid="$3" url="$4" code="" deadline
  shift 4
  deadline=$((SECONDS + timeout))
  while :; do
    code="$(http_code "$@" "$url")"
    [ "$code" = "$want" ] && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "!! process $pid exited while waiting for $url"
      return 2
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "!! $url: no $want within ${timeout}s (last status: $code)"
      return 1
    fi
    sleep 0.5
  done
}

# api_call METHOD URL SECRET [JSON]  -> sets API_CODE and API_BODY (never fails)
# The secret goes through stdin (-H @-) so it does not show up in `ps`.
API_CODE=""
API_BODY=""
api_call() {
  local method="$1" url="$2" secret="$3" data="${4-}" out
  local args=(-sS --max-time 15 -X "$method" -H @- -w '\n%{http_code}')
  if [ -n "$data" ]; then args+=(-H 'Content-Type: application/json' --data-binary "$data"); fi
  if out="$(printf 'X-Tyk-Authorization: %s\n' "$secret" | curl "${args[@]}" "$url" 2>&1)"; then
    API_CODE="${out##*$'\n'}"
    API_BODY="${out%$'\n'*}"
  else
    API_CODE=000
    API_BODY="$out"
  fi
}

# json_get KEY < JSON
json_get() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# bootstrap_token API_BASE SECRET [GROUP] -> sets BOOT_TOKEN and BOOT_CA_HASH
# shellcheck disable=SC2034 # read by the scripts that source this file
BOOT_TOKEN=""
BOOT_CA_HASH=""
bootstrap_token() {
  local base="$1" secret="$2" group="${3:-default}"
  api_call POST "$base/portcullis/bootstrap-tokens" "$secret" "{\"group\":\"$group\"}"
  [ "$API_CODE" = 200 ] || die "POST /portcullis/bootstrap-tokens -> $API_CODE: $API_BODY"
  # shellcheck disable=SC2034
  BOOT_TOKEN="$(json_get token <<<"$API_BODY")" || die "no token in: $API_BODY"
  # shellcheck disable=SC2034
  BOOT_CA_HASH="$(json_get ca_hash <<<"$API_BODY")" || die "no ca_hash in: $API_BODY"
}

# tyk_api_upsert API_BASE SECRET API_ID JSON: create the API definition, or update it if it exists
tyk_api_upsert() {
  local base="$1" secret="$2" id="$3" def="$4"
  api_call GET "$base/tyk/apis/$id" "$secret"
  if [ "$API_CODE" = 200 ]; then
    api_call PUT "$base/tyk/apis/$id" "$secret" "$def"
  else
    api_call POST "$base/tyk/apis" "$secret" "$def"
    if [ "$API_CODE" != 200 ]; then
      local post="$API_CODE $API_BODY"
      api_call PUT "$base/tyk/apis/$id" "$secret" "$def"
      [ "$API_CODE" = 200 ] || die "creating API $id failed: POST -> $post; PUT -> $API_CODE $API_BODY"
    fi
  fi
  [ "$API_CODE" = 200 ] || die "updating API $id failed: $API_CODE $API_BODY"
  log "    API $id: $API_BODY"
}
