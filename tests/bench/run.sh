#!/usr/bin/env bash
# Proxy benchmark, pinned layout (reference/perf.md §5): direct upstream vs nginx proxy vs Portcullis.
#
#   CPU 0: load generator (wrk -t1 / oha) + upstream (nginx, 1 worker, `return 200` 34-byte body)
#   CPU 1: the proxy under test, alone: nginx (1 worker) on :18001, portcullis-gw
#          (PORTCULLIS_WORKER_THREADS=1) on :18002 (admin :19080); portcullis-cp unpinned
#          (API :17080, sync :17443, database portcullis_bench, recreated each run)
#
# Usage: tests/bench/run.sh
# Env:   REPS=5 DUR=10 WARM=3 CONNS=64     closed loop (wrk --latency), targets interleaved round-robin
#        RATE=5000 OL_DUR=10 OL_REPS=3     open loop (oha -q RATE --latency-correction), if oha exists
#        OHA=path/to/oha                   (default: oha on PATH, else ~/.cargo/bin/oha)
#        PROPAGATION=1                     run $BIN/portcullis-bench-propagation at the end (0 = skip)
#        W=dir                             scratch dir for configs, logs and raw outputs (default mktemp -d)
#        HOLD=path                         after setup, wait until path exists (profile the servers by hand)
#        NO_BUILD=1                        skip cargo build; CARGO_TARGET_DIR (default /var/tmp/portcullis-target)
#        TLS=1                             HTTPS targets: nginx :18011 vs portcullis-gw --tls-listen :18012, same
#                                          certificate; keep-alive and one handshake per request (0 = skip)
#        JWT=1                             JWT HS256/RS256/ES256 (verified-token cache hit), RS256 with every token
#                                          new (COLD_TOKENS=60000 signed by Python `cryptography`), external OAuth
#                                          introspection cached (Python introspection server on :18020) (0 = skip)
#        HMAC=1                            HMAC-SHA256 signed requests (draft-cavage `Signature`, one fixed signed
#                                          Date, no skew window) and a keyless API signing its upstream requests
#                                          with hmac-sha256 (`request_signing`) (0 = skip)
#        PLUGIN=1                          a gRPC coprocess auth plugin (the tests' Python grpcio server, `bench` hook,
#                                          on the load generator's CPU; needs the test venv, built by the tests)
#                                          through a third gateway on :18004, against token auth (0 = skip)
#        HYPER=1                           the same gateway with --hyper-http1-server on :18010: keyless_hyper and
#                                          token_cached_hyper, to compare the direct HTTP/1 server with hyper's (0 = skip)
#        HAPROXY=1                         HAProxy (1 thread, CPU 1, keep-alive to the upstream) on :18005 as a second
#                                          peer of the keyless target, when haproxy is installed (0 = skip)
#        H2=1                              HTTP/2 clients: h2load -c1 -m64 (h2c prior knowledge) against nginx with
#                                          `http2` on :18006 and the keyless API, when h2load is installed (0 = skip)
#        FLOAT=1                           both cores, nothing pinned: every process above let float, nginx with 2
#                                          workers on :18007 against a gateway with 2 worker threads on :18008 and one
#                                          with --proxy-workers 2 --rate-limiter local --quota-lease 100 on :18058,
#                                          keyless and token + rate limit + quota (needs AUTH=1) (0 = skip)
#        OAUTH=1                           OAuth 2.0 provider: bearer token issued by this edge (cached session),
#                                          client_credentials at the token endpoint (req/s), and the first use of
#                                          FIRST_USE_TOKENS=300 tokens at the other gateway (own Redis prefix) (0 = skip)
# Every server started here is stopped by PID on exit. Needs >= 2 CPUs.
# Fleet benchmark (simulated edges against a real CP; separate): $BIN/portcullis-bench-storm --nodes 500, see docs/benchmarks.md "Fleet".
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/services.sh
source "$ROOT/deploy/lib/services.sh"

REPS="${REPS:-5}"; DUR="${DUR:-10}"; WARM="${WARM:-3}"; CONNS="${CONNS:-64}"
RATE="${RATE:-5000}"; OL_DUR="${OL_DUR:-10}"; OL_REPS="${OL_REPS:-3}"
PROPAGATION="${PROPAGATION:-1}"
W="${W:-$(mktemp -d /tmp/portcullis-bench.XXXXXX)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portcullis-target}"
BIN="$CARGO_TARGET_DIR/release"
DB_NAME=portcullis_bench
API="http://127.0.0.1:17080"
LG_CPU=0 # load generator + upstream
PX_CPU=1 # proxy under test

declare -A URL=(
  [direct]="http://127.0.0.1:18000/"
  [nginx]="http://127.0.0.1:18001/"
  [portcullis]="http://127.0.0.1:18002/bench/"
  [token_cached]="http://127.0.0.1:18002/tok/"
  [token_redis]="http://127.0.0.1:18003/tok/"
  [token_rl_quota]="http://127.0.0.1:18002/tok/"
  [token_rl_quota_leased]="http://127.0.0.1:18009/tok/"
  [basic_cached]="http://127.0.0.1:18002/basic/"
  [nginx_tls]="https://127.0.0.1:18011/"
  [portcullis_tls]="https://127.0.0.1:18012/tlsb/"
  [nginx_tls_hs]="https://127.0.0.1:18011/"
  [portcullis_tls_hs]="https://127.0.0.1:18012/tlsb/"
  [jwt_hs256]="http://127.0.0.1:18002/jwths/"
  [jwt_rs256]="http://127.0.0.1:18002/jwtrs/"
  [jwt_es256]="http://127.0.0.1:18002/jwtes/"
  [jwt_rs256_cold]="http://127.0.0.1:18002/jwtrs/"
  [introspection]="http://127.0.0.1:18002/intro/"
  [oauth_bearer]="http://127.0.0.1:18002/oauthb/"
  [oauth_token]="http://127.0.0.1:18002/oauthb/oauth/token"
  [hmac_sha256]="http://127.0.0.1:18002/hmacb/"
  [upstream_signed]="http://127.0.0.1:18002/signb/"
  [plugin_grpc]="http://127.0.0.1:18004/plugb/"
  [keyless_hyper]="http://127.0.0.1:18010/bench/"
  [token_cached_hyper]="http://127.0.0.1:18010/tok/"
)
# Request headers per target (auth scenarios of issue 4).
declare -A HDR=(
  [token_cached]="Authorization: bench-token-key"
  [token_cached_hyper]="Authorization: bench-token-key"
  [token_redis]="Authorization: bench-token-key"
  [token_rl_quota]="Authorization: bench-limited-key"
  [token_rl_quota_leased]="Authorization: bench-limited-key"
  [basic_cached]="Authorization: Basic $(printf 'bench-user:bench-password' | base64)"
  # A new connection, so a full TLS handshake, for every request.
  [nginx_tls_hs]="Connection: close"
  [portcullis_tls_hs]="Connection: close"
)
ORDER=(direct nginx portcullis)
if [ "${HAPROXY:-1}" = 1 ] && command -v haproxy >/dev/null; then
  ORDER+=(haproxy)
  URL[haproxy]="http://127.0.0.1:18005/"
else
  HAPROXY=0
fi
if [ "${AUTH:-1}" = 1 ]; then
  ORDER+=(token_cached token_redis token_rl_quota token_rl_quota_leased basic_cached)
fi
if [ "${HYPER:-1}" = 1 ]; then
  ORDER+=(keyless_hyper)
  if [ "${AUTH:-1}" = 1 ]; then ORDER+=(token_cached_hyper); fi
fi
if [ "${TLS:-1}" = 1 ]; then
  ORDER+=(nginx_tls portcullis_tls nginx_tls_hs portcullis_tls_hs)
fi
if [ "${JWT:-1}" = 1 ]; then
  ORDER+=(jwt_hs256 jwt_rs256 jwt_es256 jwt_rs256_cold introspection)
fi
if [ "${OAUTH:-1}" = 1 ]; then
  ORDER+=(oauth_bearer oauth_token)
fi
if [ "${HMAC:-1}" = 1 ]; then
  ORDER+=(hmac_sha256 upstream_signed)
fi
PLUGIN_PY="${PLUGIN_PY:-/var/tmp/portcullis-test-venv/bin/python}"
if [ "${PLUGIN:-1}" = 1 ] && [ ! -x "$PLUGIN_PY" ]; then
  log "no $PLUGIN_PY (run the tests once to build the venv): skipping the plugin target"
  PLUGIN=0
fi
if [ "${PLUGIN:-1}" = 1 ]; then
  ORDER+=(plugin_grpc)
  HDR[plugin_grpc]="Authorization: good-bench"
fi
COLD_TOKENS="${COLD_TOKENS:-60000}"
OAUTH_CLIENT=bench-client
OAUTH_SECRET=bench-client-secret-0123456789
# Targets whose requests come from a wrk script (one new token each, a POST); oha cannot, so
# the open loop skips them.
declare -A SCRIPTED=([jwt_rs256_cold]=1 [oauth_token]=1)
# hdr TARGET: sets H to the wrk/oha header arguments of the target, and POST to what follows
# the URL (a wrk script's arguments).
hdr() {
  H=(); POST=()
  if [ -n "${HDR[$1]-}" ]; then H=(-H "${HDR[$1]}"); fi
  case "$1" in
    jwt_rs256_cold) H=(-s "$HERE/tokens.lua"); POST=(-- "$W/jwt/rs256_many.txt") ;;
    oauth_token) H=(-s "$HERE/oauth_token.lua"); POST=(-- "Basic $(printf %s "$OAUTH_CLIENT:$OAUTH_SECRET" | base64 -w0)") ;;
    hmac_sha256) H+=(-H "Date: $HMAC_DATE") ;;
  esac
}

mkdir -p "$W"/{up,px}/{logs,tmp} "$W/results/closed" "$W/results/open" "$W/gw-state"
log "scratch dir: W=$W"

PIDS=()
start() { # start CPUSET NAME CMD...   (CPUSET "-" = not pinned)
  local cpus="$1" name="$2"
  shift 2
  if [ "$cpus" = - ]; then
    "$@" >"$W/$name.log" 2>&1 </dev/null &
  else
    taskset -c "$cpus" "$@" >"$W/$name.log" 2>&1 </dev/null &
  fi
  PIDS+=("$!")
  log "    started $name pid=$! cpus=$cpus log=$W/$name.log"
}
# start_gw CPUSET NAME PORT TLS_PORT ADMIN_PORT REDIS_PREFIX [ARGS...]: a gateway joined to the
# control plane with a bootstrap token of its own, PORTCULLIS_WORKER_THREADS=${GW_THREADS:-1}.
start_gw() {
  local cpus="$1" name="$2" port="$3" tls="$4" admin="$5" prefix="$6"
  shift 6
  bootstrap_token "$API" "$ADMIN_SECRET" default
  RUST_LOG="${RUST_LOG:-warn}" \
    PORTCULLIS_WORKER_THREADS="${GW_THREADS:-1}" \
    PORTCULLIS_BOOTSTRAP_TOKEN="$BOOT_TOKEN" \
    PORTCULLIS_ENCRYPTION_SECRET="$ENC_SECRET" \
    start "$cpus" "$name" "$BIN/portcullis-gw" run --listen "127.0.0.1:$port" \
    --tls-listen "127.0.0.1:$tls" --admin-listen "127.0.0.1:$admin" \
    --control-plane https://127.0.0.1:17443 --ca-hash "$BOOT_CA_HASH" \
    --redis-url "redis://127.0.0.1:16379" --redis-prefix "$prefix" "$@"
}
cleanup() {
  local rc=$?
  if [ "${#PIDS[@]}" -gt 0 ]; then
    stop_pids "${PIDS[@]}"
    log "stopped ${#PIDS[@]} servers"
  fi
  step_report "$rc"
  log "raw outputs: $W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
step_begin "tools"
[ "$(nproc)" -ge 2 ] || die "the pinned layout needs 2 CPUs (nproc=$(nproc))"
ensure_cmd curl curl
ensure_cmd openssl openssl
ensure_cmd python3 python3
ensure_cmd taskset util-linux
ensure_cmd wrk wrk
ensure_cmd nginx nginx-light
ensure_cargo
ensure_protoc
ensure_postgres
OHA="${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}"
for p in 17080 17443 18000 18001 18002 18005 18006 18007 18008 18009 18011 18058 18068 18012 18020 19080 19088 19089 19098; do
  if port_open "$p"; then die "127.0.0.1:$p is already in use (another benchmark or stack running?)"; fi
done
step_end

if [ "${NO_BUILD:-0}" != 1 ]; then
  step_begin "cargo build --release"
  (cd "$ROOT" && cargo build --release --locked -p portcullis-control-plane -p portcullis-data-plane -p portcullis-tests --bin portcullis-cp --bin portcullis-gw --bin portcullis-bench-propagation)
  step_end
fi
if [ ! -x "$BIN/portcullis-cp" ] || [ ! -x "$BIN/portcullis-gw" ]; then die "binaries missing in $BIN"; fi

# ---------------------------------------------------------------------------------------------
step_begin "configs and servers"
common_http='
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;'
cat >"$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $W/up/nginx.pid;
error_log $W/up/logs/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  $common_http
  server {
    listen 127.0.0.1:18000 backlog=4096;
    location / {
      default_type application/json;
      return 200 '{"message":"hello from upstream"}\n';
    }
  }
}
EOF
# One server certificate for both HTTPS proxies (ECDSA P-256, what most sites serve).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
cat >"$W/px/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $W/px/nginx.pid;
error_log $W/px/logs/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  $common_http
  upstream up {
    server 127.0.0.1:18000;
    keepalive 256;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:18001 backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
  server {
    listen 127.0.0.1:18006 http2 backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
  server {
    listen 127.0.0.1:18011 ssl backlog=4096;
    ssl_certificate $W/tls.crt;
    ssl_certificate_key $W/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
EOF
cat >"$W/px/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server 75s
  http-reuse always
frontend bench
  bind 127.0.0.1:18005
  default_backend up
backend up
  server up1 127.0.0.1:18000
EOF
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# fresh database, fresh secrets for every run
pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c "drop database if exists $DB_NAME with (force)" >/dev/null
ensure_database "$DB_NAME"
ADMIN_SECRET="$(openssl rand -hex 32)"
ENC_SECRET="$(openssl rand -hex 32)"
printf '%s\n' "$ADMIN_SECRET" >"$W/admin_secret"
printf '%s\n' "$ENC_SECRET" >"$W/encryption_secret" # for a gateway joined by hand (HOLD)

start "$LG_CPU" upstream-nginx nginx -p "$W/up" -e "$W/up/logs/error.log" -c "$W/up/nginx.conf"
start "$PX_CPU" proxy-nginx nginx -p "$W/px" -e "$W/px/logs/error.log" -c "$W/px/nginx.conf"
if [ "${HAPROXY:-1}" = 1 ]; then
  start "$PX_CPU" proxy-haproxy haproxy -db -f "$W/px/haproxy.cfg"
fi
# The gateways' regional Redis, with the load generator (perf.md §5), nothing kept on disk.
ensure_cmd redis-server redis-server
start "$LG_CPU" redis redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no
wait_http_code 200 10 "${PIDS[0]}" "${URL[direct]}"
wait_http_code 200 10 "${PIDS[1]}" "${URL[nginx]}"
if [ "${HAPROXY:-1}" = 1 ]; then wait_http_code 200 10 "${PIDS[2]}" "${URL[haproxy]}"; fi

RUST_LOG="${RUST_LOG:-warn}" \
  PORTCULLIS_DATABASE_URL="$(pg_url_for "$DB_NAME")" \
  PORTCULLIS_ADMIN_SECRET="$ADMIN_SECRET" \
  PORTCULLIS_ENCRYPTION_SECRET="$ENC_SECRET" \
  start - portcullis-cp "$BIN/portcullis-cp" serve --api-listen 127.0.0.1:17080 --sync-listen 127.0.0.1:17443
CP_PID="${PIDS[-1]}"
wait_http_code 200 30 "$CP_PID" "$API/hello"
start_gw "$PX_CPU" portcullis-gw 18002 18012 19080 gw1: \
  --state-dir "$W/gw-state"
GW_PID="${PIDS[-1]}"
if [ "${AUTH:-1}" = 1 ]; then
  # The same gateway, but every session from Redis (no in-process cache), for "token (Redis)".
  start_gw "$PX_CPU" portcullis-gw-nocache 18003 18013 19081 gw2: \
    --disable-local-session-cache
  # The same again, counting rate limits in memory and quotas in leases of up to 100 requests,
  # for "token + rate limit + quota, leased" (docs/limits.md).
  start_gw "$PX_CPU" portcullis-gw-leased 18009 18019 19089 gw3: \
    --rate-limiter local --quota-lease 100
fi
if [ "${HYPER:-1}" = 1 ]; then
  # The same gateway with hyper's HTTP/1 server for every client connection, to compare the
  # direct server with it in the same run (docs/architecture.md, "Client connections").
  start_gw "$PX_CPU" portcullis-gw-hyper 18010 18030 19090 gw1h: \
    --hyper-http1-server
fi
wait_http_code 200 30 "$GW_PID" "http://127.0.0.1:19080/ready"
tyk_api_upsert "$API" "$ADMIN_SECRET" bench \
  '{"name":"bench","api_id":"bench","use_keyless":true,"active":true,"proxy":{"listen_path":"/bench/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
wait_http_code 200 30 "$GW_PID" "${URL[portcullis]}"
if [ "${HYPER:-1}" = 1 ]; then wait_http_code 200 30 "$GW_PID" "${URL[keyless_hyper]}"; fi
if [ "${TLS:-1}" = 1 ]; then
  # The same certificate and key as nginx, through the certificate store.
  cat "$W/tls.crt" "$W/tls.key" >"$W/tls.bundle.pem"
  cert_out="$(curl -sS --max-time 15 -X POST -H "X-Tyk-Authorization: $ADMIN_SECRET" \
    --data-binary @"$W/tls.bundle.pem" "$API/tyk/certs")"
  CERT_ID="$(printf '%s' "$cert_out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" \
    || die "uploading the TLS certificate: $cert_out"
  tyk_api_upsert "$API" "$ADMIN_SECRET" tlsb \
    "{\"name\":\"tlsb\",\"api_id\":\"tlsb\",\"use_keyless\":true,\"certificates\":[\"$CERT_ID\"],\"proxy\":{\"listen_path\":\"/tlsb/\",\"target_url\":\"http://127.0.0.1:18000/\",\"strip_listen_path\":true}}"
  wait_http_code 200 30 "$GW_PID" "${URL[portcullis]}"
  for _ in $(seq 1 100); do
    code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "${URL[portcullis_tls]}" || true)"
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || die "portcullis_tls answers $code"
fi
if [ "${AUTH:-1}" = 1 ]; then
  tyk_api_upsert "$API" "$ADMIN_SECRET" tok \
    '{"name":"tok","api_id":"tok","use_keyless":false,"proxy":{"listen_path":"/tok/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  tyk_api_upsert "$API" "$ADMIN_SECRET" basic \
    '{"name":"basic","api_id":"basic","use_keyless":false,"use_basic_auth":true,"proxy":{"listen_path":"/basic/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  api_call POST "$API/tyk/keys/bench-token-key" "$ADMIN_SECRET" '{"access_rights":{"tok":{"api_id":"tok"}}}'
  [ "$API_CODE" = 200 ] || die "creating the token key: $API_CODE $API_BODY"
  api_call POST "$API/tyk/keys/bench-limited-key" "$ADMIN_SECRET" \
    '{"rate":100000000,"per":1,"quota_max":1000000000000,"quota_renewal_rate":86400,"access_rights":{"tok":{"api_id":"tok"}}}'
  [ "$API_CODE" = 200 ] || die "creating the limited key: $API_CODE $API_BODY"
  api_call POST "$API/tyk/keys/bench-user" "$ADMIN_SECRET" \
    '{"access_rights":{"basic":{"api_id":"basic"}},"basic_auth_data":{"password":"bench-password"}}'
  [ "$API_CODE" = 200 ] || die "creating the basic user: $API_CODE $API_BODY"
  checks=(token_cached token_redis token_rl_quota token_rl_quota_leased basic_cached)
  if [ "${HYPER:-1}" = 1 ]; then checks+=(token_cached_hyper); fi
  for t in "${checks[@]}"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[$t]}" --max-time 5 "${URL[$t]}" || true)"
    [ "$code" = 200 ] || die "$t answers $code"
  done
fi
if [ "${JWT:-1}" = 1 ]; then
  mkdir -p "$W/jwt"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/jwt/rsa.pem" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/jwt/ec.pem" 2>/dev/null
  openssl pkey -in "$W/jwt/rsa.pem" -pubout -out "$W/jwt/rsa.pub"
  openssl pkey -in "$W/jwt/ec.pem" -pubout -out "$W/jwt/ec.pub"
  openssl rand -hex 32 | tr -d '\n' >"$W/jwt/hmac.secret"
  python3 -c 'import cryptography' 2>/dev/null || run_quiet "pip install cryptography" python3 -m pip install --quiet cryptography
  log "    signing $COLD_TOKENS RS256 tokens with Python cryptography"
  python3 "$HERE/jwt_tokens.py" "$W/jwt" "$COLD_TOKENS"
  start "$LG_CPU" introspection python3 "$HERE/introspection_server.py" 18020
  b64() { base64 -w0 <"$1"; }
  api_call POST "$API/tyk/policies" "$ADMIN_SECRET" \
    '{"id":"bench-jwt","access_rights":{"jwths":{"api_id":"jwths"},"jwtrs":{"api_id":"jwtrs"},"jwtes":{"api_id":"jwtes"}}}'
  [ "$API_CODE" = 200 ] || die "creating the JWT policy: $API_CODE $API_BODY"
  for spec in "jwths hmac $W/jwt/hmac.secret" "jwtrs rsa $W/jwt/rsa.pub" "jwtes ecdsa $W/jwt/ec.pub"; do
    read -r id method src <<<"$spec"
    tyk_api_upsert "$API" "$ADMIN_SECRET" "$id" \
      "{\"name\":\"$id\",\"api_id\":\"$id\",\"org_id\":\"bench\",\"enable_jwt\":true,\"jwt_signing_method\":\"$method\",\"jwt_source\":\"$(b64 "$src")\",\"jwt_default_policies\":[\"bench-jwt\"],\"proxy\":{\"listen_path\":\"/$id/\",\"target_url\":\"http://127.0.0.1:18000/\",\"strip_listen_path\":true}}"
  done
  tyk_api_upsert "$API" "$ADMIN_SECRET" intro \
    '{"name":"intro","api_id":"intro","org_id":"bench","external_oauth":{"enabled":true,"providers":[{"introspection":{"enabled":true,"url":"http://127.0.0.1:18020/introspect","client_id":"bench","client_secret":"bench-secret","cache":{"enabled":true,"timeout":3600}}}]},"proxy":{"listen_path":"/intro/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  HDR[jwt_hs256]="Authorization: Bearer $(cat "$W/jwt/hs256.txt")"
  HDR[jwt_rs256]="Authorization: Bearer $(cat "$W/jwt/rs256.txt")"
  HDR[jwt_es256]="Authorization: Bearer $(cat "$W/jwt/es256.txt")"
  HDR[introspection]="Authorization: Bearer bench-opaque-access-token"
  for t in jwt_hs256 jwt_rs256 jwt_es256 introspection; do
    code=000
    for _ in $(seq 1 100); do
      code="$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[$t]}" --max-time 5 "${URL[$t]}" || true)"
      [ "$code" = 200 ] && break
      sleep 0.1
    done
    [ "$code" = 200 ] || die "$t answers $code"
  done
fi
if [ "${OAUTH:-1}" = 1 ]; then
  api_call POST "$API/tyk/policies" "$ADMIN_SECRET" '{"id":"bench-oauth","access_rights":{"oauthb":{"api_id":"oauthb"}}}'
  [ "$API_CODE" = 200 ] || die "creating the OAuth policy: $API_CODE $API_BODY"
  tyk_api_upsert "$API" "$ADMIN_SECRET" oauthb \
    '{"name":"oauthb","api_id":"oauthb","org_id":"bench","use_oauth2":true,"oauth_meta":{"allowed_access_types":["client_credentials"],"allowed_authorize_types":["code"]},"proxy":{"listen_path":"/oauthb/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  api_call POST "$API/tyk/oauth/clients/create" "$ADMIN_SECRET" \
    "{\"client_id\":\"$OAUTH_CLIENT\",\"secret\":\"$OAUTH_SECRET\",\"api_id\":\"oauthb\",\"policy_id\":\"bench-oauth\",\"redirect_uri\":\"http://127.0.0.1/cb\"}"
  [ "$API_CODE" = 200 ] || die "creating the OAuth client: $API_CODE $API_BODY"
  oauth_token() { # oauth_token PORT: prints an access token from the client_credentials grant
    curl -s --max-time 5 -u "$OAUTH_CLIENT:$OAUTH_SECRET" -d grant_type=client_credentials \
      "http://127.0.0.1:$1/oauthb/oauth/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
  }
  tok=""
  for _ in $(seq 1 100); do
    tok="$(oauth_token 18002 2>/dev/null || true)"
    [ -n "$tok" ] && break
    sleep 0.1
  done
  [ -n "$tok" ] || die "no OAuth token from the edge's token endpoint"
  HDR[oauth_bearer]="Authorization: Bearer $tok"
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[oauth_bearer]}" --max-time 5 "${URL[oauth_bearer]}" || true)"
  [ "$code" = 200 ] || die "oauth_bearer answers $code"
fi
if [ "${HMAC:-1}" = 1 ]; then
  HMAC_SECRET="$(openssl rand -hex 24)"
  tyk_api_upsert "$API" "$ADMIN_SECRET" hmacb \
    '{"name":"hmacb","api_id":"hmacb","enable_signature_checking":true,"hmac_allowed_clock_skew":-1,"proxy":{"listen_path":"/hmacb/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  api_call POST "$API/tyk/keys/bench-hmac-key" "$ADMIN_SECRET" \
    "{\"hmac_enabled\":true,\"hmac_string\":\"$HMAC_SECRET\",\"access_rights\":{\"hmacb\":{\"api_id\":\"hmacb\"}}}"
  [ "$API_CODE" = 200 ] || die "creating the HMAC key: $API_CODE $API_BODY"
  tyk_api_upsert "$API" "$ADMIN_SECRET" signb \
    '{"name":"signb","api_id":"signb","use_keyless":true,"request_signing":{"is_enabled":true,"secret":"bench-upstream-signing-secret","key_id":"bench","algorithm":"hmac-sha256"},"proxy":{"listen_path":"/signb/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  # One signature over a fixed Date (the API has no skew window): the edge still checks it on
  # every request.
  HMAC_DATE="$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')"
  HMAC_SIG="$(printf 'date: %s' "$HMAC_DATE" | openssl dgst -sha256 -hmac "$HMAC_SECRET" -binary | base64 -w0 \
    | python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.stdin.read().strip(), safe=""))')"
  HDR[hmac_sha256]="Authorization: Signature keyId=\"bench-hmac-key\",algorithm=\"hmac-sha256\",headers=\"date\",signature=\"$HMAC_SIG\""
  for t in hmac_sha256 upstream_signed; do
    code=000
    for _ in $(seq 1 100); do
      code="$(curl -s -o /dev/null -w '%{http_code}' -H "Date: $HMAC_DATE" ${HDR[$t]:+-H "${HDR[$t]}"} --max-time 5 "${URL[$t]}" || true)"
      [ "$code" = 200 ] && break
      sleep 0.1
    done
    [ "$code" = 200 ] || die "$t answers $code"
  done
fi
if [ "${PLUGIN:-1}" = 1 ]; then
  start "$LG_CPU" plugin-server "$PLUGIN_PY" "$ROOT/tests/src/py/coprocess_server.py" \
    "$ROOT/proto/proto/coprocess" "$W/plugin-counts.json"
  PLUGIN_PORT=""
  for _ in $(seq 1 100); do
    PLUGIN_PORT="$(head -n1 "$W/plugin-server.log" 2>/dev/null | tr -dc 0-9)"
    [ -n "$PLUGIN_PORT" ] && break
    sleep 0.2
  done
  [ -n "$PLUGIN_PORT" ] || die "the plugin server printed no port (see $W/plugin-server.log)"
  start_gw "$PX_CPU" portcullis-gw-plugin 18004 18014 19082 gw3: \
    --coprocess-grpc-server "tcp://127.0.0.1:$PLUGIN_PORT"
  tyk_api_upsert "$API" "$ADMIN_SECRET" plugb \
    '{"name":"plugb","api_id":"plugb","enable_coprocess_auth":true,"custom_middleware":{"driver":"grpc","auth_check":{"name":"bench"}},"proxy":{"listen_path":"/plugb/","target_url":"http://127.0.0.1:18000/","strip_listen_path":true}}'
  code=000
  for _ in $(seq 1 150); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[plugin_grpc]}" --max-time 5 "${URL[plugin_grpc]}" || true)"
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || die "plugin_grpc answers $code"
fi
for t in "${ORDER[@]}"; do
  [ -n "${SCRIPTED[$t]-}" ] && continue
  hdr "$t"
  # -k: the HTTPS targets serve the run's self-signed certificate.
  size="$(curl -sk -o /dev/null -w '%{size_download}' --max-time 2 "${H[@]}" "${URL[$t]}" || true)"
  [ "$size" = 34 ] || log "!! $t: body is $size bytes, expected the 34-byte upstream body"
done
step_end

if [ -n "${HOLD:-}" ]; then
  # For profiling by hand: every server is up; the run goes on once $HOLD exists.
  log "servers up (gateway pid $GW_PID); waiting for $HOLD"
  while [ ! -e "$HOLD" ]; do sleep 1; done
fi

# ---------------------------------------------------------------------------------------------
step_begin "closed loop (wrk, $REPS x ${DUR}s)"
for t in "${ORDER[@]}"; do
  hdr "$t"
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${WARM}s" "${H[@]}" "${URL[$t]}" "${POST[@]}" >/dev/null
done
for r in $(seq 1 "$REPS"); do
  for t in "${ORDER[@]}"; do
    out="$W/results/closed/$t.$r.txt"
    hdr "$t"
    taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "${H[@]}" "${URL[$t]}" "${POST[@]}" >"$out"
    printf '    %-11s rep %s: %s  p99 %s\n' "$t" "$r" \
      "$(awk '/Requests\/sec/ {print $2 " req/s"}' "$out")" "$(awk '$1 == "99%" {print $2}' "$out")" >&2
    sleep 1
  done
done
step_end

# ---------------------------------------------------------------------------------------------
if [ "${H2:-1}" = 1 ] && command -v h2load >/dev/null; then
  step_begin "HTTP/2 clients (h2load -c1 -m64, h2c, $REPS x ${DUR}s)"
  mkdir -p "$W/results/h2"
  declare -A H2URL=([nginx_h2c]="http://127.0.0.1:18006/" [portcullis_h2c]="${URL[portcullis]}")
  for r in $(seq 1 "$REPS"); do
    for t in nginx_h2c portcullis_h2c; do
      out="$W/results/h2/$t.$r.txt"
      taskset -c "$LG_CPU" h2load -c1 -m64 -t1 --warm-up-time="${WARM}s" -D "$DUR" "${H2URL[$t]}" >"$out" 2>&1 || true
      printf '    %-15s rep %s: %s\n' "$t" "$r" "$(awk '/^finished in/ {print $4 " req/s"}' "$out")" >&2
      sleep 1
    done
  done
  python3 - "$W/results/h2" <<'PY' | tee "$W/summary-h2.md"
import glob, os, re, statistics as st, sys
d = sys.argv[1]
rows = {}
for t in ("nginx_h2c", "portcullis_h2c"):
    v = []
    for f in sorted(glob.glob(os.path.join(d, f"{t}.*.txt"))):
        txt = open(f).read()
        m = re.search(r"finished in [^,]+, ([\d.]+) req/s", txt)
        fail = re.search(r"requests: .* (\d+) failed, (\d+) errored", txt)
        if m:
            v.append((float(m.group(1)), sum(int(g) for g in fail.groups()) if fail else 0))
    rows[t] = v
print()
print("## HTTP/2 clients: h2load -c1 -m64 (h2c prior knowledge), keyless, median")
print()
print("| target | rps median (min–max) | ÷ nginx | failed |")
print("|---|---|---|---|")
base = st.median(r[0] for r in rows["nginx_h2c"]) if rows["nginx_h2c"] else None
for t, v in rows.items():
    if not v:
        print(f"| {t} | (no result) | | |"); continue
    m = st.median(r[0] for r in v)
    ratio = f"{m / base:.2f}" if base else ""
    print(f"| {t} | {m:,.0f} ({min(r[0] for r in v):,.0f}–{max(r[0] for r in v):,.0f}) | {ratio} | {sum(r[1] for r in v)} |")
PY
  step_end
fi

# ---------------------------------------------------------------------------------------------
OPEN_LOOP=0
if [ -x "$OHA" ]; then
  OPEN_LOOP=1
  step_begin "open loop (oha -q $RATE, $OL_REPS x ${OL_DUR}s)"
  if "$OHA" --help 2>&1 | grep -q -- '--output-format'; then
    OHA_JSON=(--output-format json)
    OHA_QUIET=(--output-format quiet)
  else
    OHA_JSON=(--json)
    OHA_QUIET=()
  fi
  for t in "${ORDER[@]}"; do # short warm-up at the target rate
    [ -n "${SCRIPTED[$t]-}" ] && continue
    hdr "$t"
    taskset -c "$LG_CPU" "$OHA" -c "$CONNS" -q "$RATE" -z 2s --no-tui "${OHA_QUIET[@]}" "${H[@]}" "${URL[$t]}" >/dev/null 2>&1 || true
  done
  for r in $(seq 1 "$OL_REPS"); do
    for t in "${ORDER[@]}"; do
      [ -n "${SCRIPTED[$t]-}" ] && continue
      out="$W/results/open/$t.q$RATE.$r.json"
      hdr "$t"
      taskset -c "$LG_CPU" "$OHA" -c "$CONNS" -q "$RATE" --latency-correction -z "${OL_DUR}s" --no-tui \
        "${OHA_JSON[@]}" "${H[@]}" "${URL[$t]}" >"$out"
      python3 - "$out" "$t" "$r" <<'PY' >&2
import json, sys
d = json.load(open(sys.argv[1])); s = d["summary"]; p = d["latencyPercentiles"]
print(f"    {sys.argv[2]:11s} rep {sys.argv[3]}: {s['requestsPerSec']:.0f} req/s "
      f"p50 {p['p50'] * 1e3:.3f} ms p99 {p['p99'] * 1e3:.3f} ms success {s['successRate']}")
PY
      sleep 1
    done
  done
  step_end
else
  log "oha not found ($OHA): skipping the open-loop step. Install it with: cargo install --locked oha"
fi

# ---------------------------------------------------------------------------------------------
python3 - "$W/results" "$RATE" "$OPEN_LOOP" "${ORDER[@]}" <<'PY' | tee "$W/summary.md"
import glob, json, os, re, statistics as st, sys

res, rate, open_loop, order = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]

def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    x, u = float(m.group(1)), m.group(2)
    return x / 1000 if u == "us" else x * 1000 if u == "s" else x

def wrk(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    if m:
        errs += sum(int(g) for g in m.groups())
    return rps, p50, p99, errs

closed = {t: [wrk(f) for f in sorted(glob.glob(os.path.join(res, "closed", f"{t}.*.txt")))] for t in order}
opened = {}
for t in order:
    for f in sorted(glob.glob(os.path.join(res, "open", f"{t}.q{rate}.*.json"))):
        d = json.load(open(f))
        s, p = d["summary"], d["latencyPercentiles"]
        opened.setdefault(t, []).append((s["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, s.get("successRate", 1.0)))

med = lambda rows, i: st.median(r[i] for r in rows)
# HTTPS targets are compared with nginx doing the same (same certificate, same handshakes).
BASE = {"nginx_tls": "nginx_tls", "portcullis_tls": "nginx_tls",
        "nginx_tls_hs": "nginx_tls_hs", "portcullis_tls_hs": "nginx_tls_hs"}
base_rps = lambda t: med(closed[BASE.get(t, "nginx")], 0) if closed.get(BASE.get(t, "nginx")) else None
direct_ol_p99 = med(opened["direct"], 2) if opened.get("direct") else None

print()
print(f"## Pinned layout: wrk -t1 -c64 closed loop ({len(closed[order[0]])} reps, median)"
      + (f"; oha open loop at {rate} req/s" if open_loop else "; open loop skipped (no oha)"))
print()
print(f"| target | rps median (min–max) | ÷ nginx | p50 ms | p99 ms | errors | open {rate}/s: rps | p50 ms | p99 ms | added p99 vs direct ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in order:
    rows = closed.get(t) or []
    if rows:
        rps = med(rows, 0)
        ratio = f"{rps / base_rps(t):.2f}" if base_rps(t) else ""
        c = (f"{rps:,.0f} ({min(r[0] for r in rows):,.0f}–{max(r[0] for r in rows):,.0f}) | "
             f"{ratio} | {med(rows, 1):.2f} | {med(rows, 2):.2f} | {sum(r[3] for r in rows)}")
    else:
        c = " | | | | "
    o = opened.get(t) or []
    if o:
        added = "" if t == "direct" or direct_ol_p99 is None else f"{med(o, 2) - direct_ol_p99:+.3f}"
        oc = f"{med(o, 0):,.0f} | {med(o, 1):.3f} | {med(o, 2):.3f} | {added}"
        if min(r[3] for r in o) < 1.0:
            oc += f" (success {min(r[3] for r in o):.4f})"
    else:
        oc = " | | | "
    print(f"| {t} | {c} | {oc} |")
print()
print("errors = non-2xx + socket errors summed over all closed-loop runs (must be 0).")
print("HTTPS targets are divided by nginx over HTTPS; *_hs targets open a connection (a full handshake) per request.")
PY

# ---------------------------------------------------------------------------------------------
if [ "${OAUTH:-1}" = 1 ] && [ "${AUTH:-1}" = 1 ]; then
  step_begin "OAuth tokens at first use on the other gateway"
  : >"$W/first_use_tokens.txt"
  for _ in $(seq 1 "${FIRST_USE_TOKENS:-300}"); do oauth_token 18002 >>"$W/first_use_tokens.txt"; done
  python3 "$HERE/oauth_first_use.py" 127.0.0.1 18003 /oauthb/ "$W/first_use_tokens.txt" | tee "$W/first_use.txt" >&2
  step_end
fi

# ---------------------------------------------------------------------------------------------
if [ "$PROPAGATION" = 1 ]; then
  PROP_BIN="${PROPAGATION_BIN:-$BIN/portcullis-bench-propagation}"
  if [ -x "$PROP_BIN" ]; then
    step_begin "config propagation (200 updates)"
    rc=0
    "$PROP_BIN" --api "$API" --admin-secret "$ADMIN_SECRET" --gateway http://127.0.0.1:18002 --updates 200 --revocations "${REVOCATIONS:-100}" \
      2>&1 | tee "$W/propagation.txt" || rc=$?
    [ "$rc" = 0 ] || log "!! portcullis-bench-propagation exited with $rc (output in $W/propagation.txt)"
    step_end
  else
    log "note: $PROP_BIN not found: skipping the propagation benchmark (build the package that provides it, or PROPAGATION=0)"
  fi
fi
# ---------------------------------------------------------------------------------------------
if [ "${FLOAT:-1}" = 1 ] && [ "${AUTH:-1}" = 1 ]; then
  step_begin "both cores floating (nginx 2 workers vs gateway 2 threads, $REPS x ${DUR}s)"
  cat >"$W/px/nginx2.conf" <<EOF
worker_processes 2;
daemon off;
user root;
pid $W/px/nginx2.pid;
error_log $W/px/logs/error2.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  $common_http
  upstream up {
    server 127.0.0.1:18000;
    keepalive 256;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:18007 backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
EOF
  start - proxy-nginx2 nginx -p "$W/px" -e "$W/px/logs/error2.log" -c "$W/px/nginx2.conf"
  wait_http_code 200 10 "${PIDS[-1]}" "http://127.0.0.1:18007/"
  GW_THREADS=2 start_gw - portcullis-gw-float 18008 18018 19088 gw8:
  # Two proxy workers instead of a multi-threaded runtime, with the limiter that suits them (rate
  # limits in memory, quotas in leases; docs/limits.md): a request then goes to Redis only to
  # take the next lease.
  start_gw - portcullis-gw-workers 18058 18068 19098 gw9: \
    --proxy-workers 2 --rate-limiter local --quota-lease 100
  # Let everything started so far float over both cores.
  for pid in "${PIDS[@]}"; do taskset -a -pc 0-1 "$pid" >/dev/null 2>&1 || true; done
  declare -A FURL=([nginx_float]="http://127.0.0.1:18007/" [keyless_float]="http://127.0.0.1:18008/bench/" \
    [token_rl_quota_float]="http://127.0.0.1:18008/tok/" [keyless_workers]="http://127.0.0.1:18058/bench/" \
    [token_rl_quota_workers_leased]="http://127.0.0.1:18058/tok/")
  for t in token_rl_quota_float token_rl_quota_workers_leased; do
    code=000
    for _ in $(seq 1 150); do
      code="$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[token_rl_quota]}" --max-time 5 "${FURL[$t]}" || true)"
      [ "$code" = 200 ] && break
      sleep 0.2
    done
    [ "$code" = 200 ] || die "the floating gateway answers $code at ${FURL[$t]}"
  done
  mkdir -p "$W/results/float"
  for r in $(seq 1 "$REPS"); do
    for t in nginx_float keyless_float token_rl_quota_float keyless_workers token_rl_quota_workers_leased; do
      out="$W/results/float/$t.$r.txt"
      FH=()
      case "$t" in token_rl_quota_*) FH=(-H "${HDR[token_rl_quota]}") ;; esac
      wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "${FH[@]}" "${FURL[$t]}" >"$out"
      printf '    %-20s rep %s: %s\n' "$t" "$r" "$(awk '/Requests\/sec/ {print $2 " req/s"}' "$out")" >&2
      sleep 1
    done
  done
  python3 - "$W/results/float" <<'PY' | tee "$W/summary-float.md"
import glob, os, re, statistics as st, sys
d = sys.argv[1]
rows = {}
for t in ("nginx_float", "keyless_float", "token_rl_quota_float", "keyless_workers",
          "token_rl_quota_workers_leased"):
    rows[t] = [float(re.search(r"Requests/sec:\s+([\d.]+)", open(f).read()).group(1))
               for f in sorted(glob.glob(os.path.join(d, f"{t}.*.txt")))]
print()
print("## Both cores floating: wrk -t2, nginx 2 workers, gateway 2 worker threads (*_float)")
print("## or 2 proxy workers (*_workers; *_leased: --rate-limiter local --quota-lease 100), median")
print()
print("| target | rps median (min–max) | ÷ nginx |")
print("|---|---|---|")
base = st.median(rows["nginx_float"]) if rows["nginx_float"] else None
for t, v in rows.items():
    if v:
        m = st.median(v)
        print(f"| {t} | {m:,.0f} ({min(v):,.0f}–{max(v):,.0f}) | {m / base:.2f} |" if base else f"| {t} | {m:,.0f} | |")
PY
  step_end
fi

log "summary: $W/summary.md"
