"""A stand-in identity provider for end-to-end tests (Python standard library only).

Serves, on 127.0.0.1 at a free port it prints on its first stdout line:
  GET  /jwks                                 the JWK set (replaceable at runtime)
  GET  /.well-known/openid-configuration     {"issuer", "jwks_uri"}
  POST /introspect                           RFC 7662: form token, client_id, client_secret
  GET  /count                                requests served, by path
  GET  /seen                                 the introspection forms received
  POST /admin                                JSON: {"jwks": {...}} | {"tokens": {token: answer}}
                                             | {"issuer": "..."} | {"clients": {id: secret}}
An unknown introspected token (or wrong client credentials) answers {"active": false}.
"""
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"jwks": {"keys": []}, "tokens": {}, "issuer": None, "clients": {}}
COUNT = {}
SEEN = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def count(self, path):
        with LOCK:
            COUNT[path] = COUNT.get(path, 0) + 1

    def base(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/count":
            with LOCK:
                return self.answer(200, dict(COUNT))
        if path == "/seen":
            with LOCK:
                return self.answer(200, list(SEEN))
        self.count(path)
        if path == "/jwks":
            with LOCK:
                return self.answer(200, STATE["jwks"])
        if path == "/.well-known/openid-configuration":
            with LOCK:
                issuer = STATE["issuer"] or self.base()
            return self.answer(
                200,
                {
                    "issuer": issuer,
                    "jwks_uri": self.base() + "/jwks",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                },
            )
        self.answer(404, {"error": "not found"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        raw = self.body()
        if path == "/admin":
            update = json.loads(raw or b"{}")
            with LOCK:
                STATE.update(update)
            return self.answer(200, {"ok": True})
        self.count(path)
        if path == "/introspect":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            form["_authorization"] = self.headers.get("Authorization") or ""
            form["_content_type"] = self.headers.get("Content-Type") or ""
            with LOCK:
                SEEN.append(form)
                clients = dict(STATE["clients"])
                answer = STATE["tokens"].get(form.get("token", ""))
            if clients and clients.get(form.get("client_id")) != form.get("client_secret"):
                return self.answer(200, {"active": False})
            return self.answer(200, answer if answer is not None else {"active": False})
        self.answer(404, {"error": "not found"})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
