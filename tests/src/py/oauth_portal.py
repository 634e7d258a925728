"""The other side of the OAuth 2.0 flows in end-to-end tests (Python standard library only):
the login portal, the notification webhook and the upstream, on 127.0.0.1 at a free port it
prints on its first stdout line.

  GET  /login?<query>   the login portal `/oauth/authorize` redirects to. The user is taken as
                        logged in: the query is POSTed as a form to the configured
                        authorize-client endpoint (the control plane's, with `api_id` and the
                        admin secret; or the edge's, with the portal secret), and a 200 answer's
                        `redirect_to` becomes a 302. Any other answer: 502 with
                        {"portal_error": status, "body": body}.
  POST /hook            the `oauth_on_keychange_url`. Every attempt is recorded in
                        "hook_attempts" as {"attempt" (1-based, over all notifications),
                        "secret" (the X-Tyk-Shared-Secret header), "body", "answer"}. The
                        configured "hook" behaviour decides the answer: the first `fail`
                        attempts get `fail_status` (default 500); then, with `hold`, the request
                        is accepted and left unanswered ("answer": "held") until POST /_release,
                        or until the sender hangs up ("abandoned": true); then 200. Each 2xx
                        answer also records {"secret", "body"} in "hooks" (the deliveries).
  POST /_release        answers every held and future /hook attempt (200).
  GET  /_seen           {"logins": [...], "hooks": [...], "hook_attempts": [...],
                        "upstream": [...]}.
  POST /_config         JSON {"authorize_client_url", "secret", "api_id" (omit: not sent),
                        "key_rules" (omit: not sent), "hook": {"fail", "fail_status", "hold"}}.
                        The keys given replace those keys; the others are kept.
  anything else         the upstream: answers 200 with what it received, and records it.
"""
import json
import select
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
CONFIG = {}
SEEN = {"logins": [], "hooks": [], "hook_attempts": [], "upstream": []}
# Set by POST /_release: held webhook attempts are answered.
RELEASE = threading.Event()
# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def received(self):
        path, _, query = self.path.partition("?")
        return {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.body().decode("utf-8", "replace"),
        }

    def login(self, query):
        with LOCK:
            config = dict(CONFIG)
        form = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if config.get("api_id") is not None:
            form.append(("api_id", config["api_id"]))
        if config.get("key_rules") is not None:
            form.append(("key_rules", json.dumps(config["key_rules"])))
        req = urllib.request.Request(
            config["authorize_client_url"],
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Tyk-Authorization": config.get("secret", ""),
            },
            method="POST",
        )
        try:
            with OPENER.open(req, timeout=20) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        with LOCK:
            SEEN["logins"].append({"form": form, "status": status, "body": body})
        if status == 200 and isinstance(body, dict) and body.get("redirect_to"):
            self.send_response(302)
            self.send_header("Location", body["redirect_to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.answer(502, {"portal_error": status, "body": body})

    def hung_up(self):
        """Whether the sender closed the connection (it gave up waiting for the answer)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def hook(self):
        raw = self.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        secret = self.headers.get("X-Tyk-Shared-Secret")
        with LOCK:
            behaviour = dict(CONFIG.get("hook") or {})
            attempt = {
                "attempt": len(SEEN["hook_attempts"]) + 1,
                "secret": secret,
                "body": body,
                "answer": None,
            }
            SEEN["hook_attempts"].append(attempt)
            if attempt["attempt"] <= int(behaviour.get("fail") or 0):
                attempt["answer"] = int(behaviour.get("fail_status") or 500)
            elif behaviour.get("hold") and not RELEASE.is_set():
                attempt["answer"] = "held"
            else:
                attempt["answer"] = 200
        if attempt["answer"] == "held":
            # Accepted, and not answered until released (or until the sender gives up).
            while not RELEASE.wait(0.05):
                if self.hung_up():
                    with LOCK:
                        attempt["abandoned"] = True
                    self.close_connection = True
                    return
            with LOCK:
                attempt["answer"] = 200
                attempt["released"] = True
        status = attempt["answer"]
        if 200 <= status < 300:
            with LOCK:
                SEEN["hooks"].append({"secret": secret, "body": body})
        try:
            self.answer(status, {"ok": 200 <= status < 300})
        except OSError:
            self.close_connection = True

    def handle_any(self):
        path, _, query = self.path.partition("?")
        if self.command == "GET" and path == "/login":
            return self.login(query)
        if self.command == "GET" and path == "/_seen":
            with LOCK:
                return self.answer(200, SEEN)
        if self.command == "POST" and path == "/_config":
            update = json.loads(self.body() or b"{}")
            with LOCK:
                CONFIG.update(update)
            return self.answer(200, {"ok": True})
        if self.command == "POST" and path == "/_release":
            RELEASE.set()
            return self.answer(200, {"ok": True})
        if self.command == "POST" and path == "/hook":
            return self.hook()
        got = self.received()
        with LOCK:
            SEEN["upstream"].append(got)
        return self.answer(200, got, [("X-Upstream", "python")])

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any
    do_DELETE = handle_any


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
