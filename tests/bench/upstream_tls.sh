#!/usr/bin/env bash
# Upstream TLS overhead (docs/certificates.md, "Upstream TLS"): one portcullis-gw proxying to
# nginx over plain HTTP, TLS, and mutual TLS (nginx checks the gateway's client certificate),
# with upstream keep-alive ("ka") and with a new, unresumed upstream handshake per request ("hs").
#
#   CPU 0: wrk -t1 + the upstream nginx (1 worker); CPU 1: portcullis-gw (1 worker thread);
#   portcullis-cp unpinned (API :17180, sync :17543, database portcullis_bench_uptls).
#
# Usage: tests/bench/upstream_tls.sh      (after cargo build --release -p portcullis-control-plane
#                                          -p portcullis-data-plane, or without NO_BUILD=1)
# Env:   REPS=3 DUR=10 WARM=2 CONNS=64 W=dir NO_BUILD=1 CARGO_TARGET_DIR
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/services.sh
source "$ROOT/deploy/lib/services.sh"

REPS="${REPS:-3}"; DUR="${DUR:-10}"; WARM="${WARM:-2}"; CONNS="${CONNS:-64}"
W="${W:-$(mktemp -d /tmp/portcullis-bench-uptls.XXXXXX)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portcullis-target}"
BIN="$CARGO_TARGET_DIR/release"
DB_NAME=portcullis_bench_uptls
API="http://127.0.0.1:17180"
GW="http://127.0.0.1:18102"
ORDER=(plain tls_ka mtls_ka tls_hs mtls_hs)
declare -A PORT=([plain]=18120 [tls_ka]=18121 [mtls_ka]=18122 [tls_hs]=18123 [mtls_hs]=18124)

mkdir -p "$W"/up/{logs,tmp} "$W/results" "$W/pki"
PIDS=()
start() { # start CPUSET NAME CMD...   (CPUSET "-" = not pinned)
  local cpus="$1" name="$2"
  shift 2
  if [ "$cpus" = - ]; then "$@" >"$W/$name.log" 2>&1 </dev/null &
  else taskset -c "$cpus" "$@" >"$W/$name.log" 2>&1 </dev/null &
  fi
  PIDS+=("$!")
  log "    started $name pid=$! cpus=$cpus"
}
cleanup() {
  local rc=$?
  if [ "${#PIDS[@]}" -gt 0 ]; then stop_pids "${PIDS[@]}"; fi
  log "raw outputs: $W"
  exit "$rc"
}
trap cleanup EXIT

[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs"
for p in 17180 17543 18102 18112 19180 "${PORT[@]}"; do
  if port_open "$p"; then die "127.0.0.1:$p is already in use"; fi
done
if [ "${NO_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p portcullis-control-plane -p portcullis-data-plane)
fi

# PKI: server CA + upstream certificate, client CA + the gateway's client certificate (P-256).
P="$W/pki"
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null; }
ec -x509 -days 2 -subj "/CN=bench server CA" -keyout "$P/sca.key" -out "$P/sca.crt"
ec -x509 -days 2 -subj "/CN=bench client CA" -keyout "$P/cca.key" -out "$P/cca.crt"
ec -subj "/CN=localhost" -keyout "$P/up.key" -out "$P/up.csr"
printf 'subjectAltName=DNS:localhost\n' >"$P/up.ext"
openssl x509 -req -in "$P/up.csr" -CA "$P/sca.crt" -CAkey "$P/sca.key" -CAcreateserial -days 2 \
  -extfile "$P/up.ext" -out "$P/up.crt" 2>/dev/null
ec -subj "/CN=bench gateway" -keyout "$P/gw.key" -out "$P/gw.csr"
openssl x509 -req -in "$P/gw.csr" -CA "$P/cca.crt" -CAkey "$P/cca.key" -CAcreateserial -days 2 \
  -out "$P/gw.crt" 2>/dev/null

body='return 200 '"'"'{"message":"hello from upstream"}\n'"'"';'
tls="ssl_certificate $P/up.crt; ssl_certificate_key $P/up.key; ssl_protocols TLSv1.3;"
mtls="ssl_verify_client on; ssl_client_certificate $P/cca.crt;"
hs="keepalive_timeout 0; ssl_session_cache off; ssl_session_tickets off;"
cat >"$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/up/nginx.pid;
error_log $W/up/logs/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;
  default_type application/json;
  server { listen 127.0.0.1:${PORT[plain]} backlog=4096; location / { $body } }
  server { listen 127.0.0.1:${PORT[tls_ka]} ssl backlog=4096; $tls location / { $body } }
  server { listen 127.0.0.1:${PORT[mtls_ka]} ssl backlog=4096; $tls $mtls location / { $body } }
  server { listen 127.0.0.1:${PORT[tls_hs]} ssl backlog=4096; $tls $hs location / { $body } }
  server { listen 127.0.0.1:${PORT[mtls_hs]} ssl backlog=4096; $tls $mtls $hs location / { $body } }
}
EOF
ulimit -n 65536 2>/dev/null || true
ensure_postgres
pg_psql "$PORTCULLIS_PG_ADMIN_URL" -c "drop database if exists $DB_NAME with (force)" >/dev/null
ensure_database "$DB_NAME"
ADMIN_SECRET="$(openssl rand -hex 32)"
ENC_SECRET="$(openssl rand -hex 32)"
start 0 upstream-nginx nginx -p "$W/up" -e "$W/up/logs/error.log" -c "$W/up/nginx.conf"
RUST_LOG="${RUST_LOG:-warn}" PORTCULLIS_DATABASE_URL="$(pg_url_for "$DB_NAME")" \
  PORTCULLIS_ADMIN_SECRET="$ADMIN_SECRET" PORTCULLIS_ENCRYPTION_SECRET="$ENC_SECRET" \
  start - portcullis-cp "$BIN/portcullis-cp" serve --api-listen 127.0.0.1:17180 --sync-listen 127.0.0.1:17543
wait_http_code 200 30 "${PIDS[-1]}" "$API/hello"
bootstrap_token "$API" "$ADMIN_SECRET" default
RUST_LOG="${RUST_LOG:-warn}" PORTCULLIS_WORKER_THREADS=1 PORTCULLIS_BOOTSTRAP_TOKEN="$BOOT_TOKEN" \
  PORTCULLIS_ENCRYPTION_SECRET="$ENC_SECRET" \
  start 1 portcullis-gw "$BIN/portcullis-gw" run --listen 127.0.0.1:18102 --tls-listen 127.0.0.1:18112 \
  --admin-listen 127.0.0.1:19180 --control-plane https://127.0.0.1:17543 --ca-hash "$BOOT_CA_HASH"
GW_PID="${PIDS[-1]}"
wait_http_code 200 30 "$GW_PID" "http://127.0.0.1:19180/ready"

upload() { # upload PEM_FILE -> prints the id
  local out
  out="$(printf 'X-Tyk-Authorization: %s\n' "$ADMIN_SECRET" | curl -sS --max-time 15 -H @- \
    --data-binary @"$1" "$API/tyk/certs")"
  json_get id <<<"$out" || die "upload $1: $out"
}
CA_ID="$(upload "$P/sca.crt")"
cat "$P/gw.crt" "$P/gw.key" >"$P/gw.bundle.pem"
GW_CERT_ID="$(upload "$P/gw.bundle.pem")"
for t in "${ORDER[@]}"; do
  extra=""
  case "$t" in mtls_*) extra=",\"upstream_certificates\":{\"*\":\"$GW_CERT_ID\"}" ;; esac
  target="https://localhost:${PORT[$t]}/"
  [ "$t" = plain ] && target="http://127.0.0.1:${PORT[$t]}/"
  tyk_api_upsert "$API" "$ADMIN_SECRET" "$t" \
    "{\"name\":\"$t\",\"api_id\":\"$t\",\"use_keyless\":true,\"active\":true$extra,\"proxy\":{\"listen_path\":\"/$t/\",\"target_url\":\"$target\",\"strip_listen_path\":true,\"transport\":{\"ssl_ca_certificates\":[\"$CA_ID\"]}}}"
done
for t in "${ORDER[@]}"; do
  wait_http_code 200 30 "$GW_PID" "$GW/$t/" || die "$t does not answer 200: $(curl -s "$GW/$t/")"
done

for t in "${ORDER[@]}"; do
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${WARM}s" "$GW/$t/" >/dev/null
done
for r in $(seq 1 "$REPS"); do
  for t in "${ORDER[@]}"; do
    out="$W/results/$t.$r.txt"
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$GW/$t/" >"$out"
    printf '    %-8s rep %s: %s  p50 %s  p99 %s  errors %s\n' "$t" "$r" \
      "$(awk '/Requests\/sec/ {print $2 " req/s"}' "$out")" "$(awk '$1 == "50%" {print $2}' "$out")" \
      "$(awk '$1 == "99%" {print $2}' "$out")" "$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$out")" >&2
    sleep 1
  done
done
log "==> median req/s over $REPS reps"
for t in "${ORDER[@]}"; do
  printf '%-8s %s\n' "$t" "$(awk '/Requests\/sec/ {print $2}' "$W"/results/"$t".*.txt | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
