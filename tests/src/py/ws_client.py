# A WebSocket client written with the `websockets` package, driven by one JSON command in
# argv[1]; prints one JSON result. Every command takes "url" (ws://... or wss://...),
# "headers" and, for wss, "ca_file" (the CA to trust).
#   handshake   connect and close: {"status": 101} or the refusal {"status", "body", "headers"}
#   echo        send "messages" ({"text": s} or {"binary": n random bytes}) one by one; each
#               reply must equal what was sent: {"status": 101, "echoed": [true, ...]}
#   concurrent  "n" connections opened at once, each echoing its own text:
#               {"ok": count, "errors": [a few distinct failures]}
#   held_open   ws A open and echoing, a plain GET of "plain_url" meanwhile, A echoes again,
#               A closes, ws B echoes: {"plain_status", "plain_body", "a", "b"}
#   idle        echo "active" messages "interval" s apart (at least one), then wait up to
#               "wait" s for a message: {"active": [true, ...], "closed": bool}
#   server_close  ask the upstream to close: {"code", "reason"} of the close frame received
#   refused_then_plain  over one raw HTTP/1.1 connection: an upgrade request to "refuse_path",
#               then a plain GET of "plain_path": {"refused": {"status", "body", "headers"},
#               "plain_status", "same_connection"}
# A refused upgrade where a command needs a tunnel prints {"handshake_refused": refusal}.
import base64
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

cmd = json.loads(sys.argv[1])


def open_ws():
    tls = ssl.create_default_context(cafile=cmd["ca_file"]) if "ca_file" in cmd else None
    return connect(cmd["url"], ssl=tls, additional_headers=cmd.get("headers", {}), proxy=None,
                   max_size=None, ping_interval=None, open_timeout=30, close_timeout=5)


def refusal(e):
    r = e.response
    return {"status": r.status_code, "body": bytes(r.body).decode("utf-8", "replace"),
            "headers": {k.lower(): v for k, v in r.headers.raw_items()}}


def echo_on(ws, messages):
    result = []
    for m in messages:
        sent = m["text"] if "text" in m else os.urandom(m["binary"])
        ws.send(sent)
        got = ws.recv(timeout=60)
        result.append(got == sent)
    return result


def run():
    op = cmd["op"]
    if op == "handshake":
        try:
            with open_ws():
                return {"status": 101}
        except InvalidStatus as e:
            return refusal(e)
    if op == "echo":
        try:
            with open_ws() as ws:
                return {"status": 101, "echoed": echo_on(ws, cmd["messages"])}
        except InvalidStatus as e:
            return refusal(e)
    if op == "concurrent":
        ok, errors = [], []
        barrier = threading.Barrier(cmd["n"])

        def one(i):
            try:
                with open_ws() as ws:
                    barrier.wait(timeout=60)
                    if echo_on(ws, [{"text": f"hello {i}"}]) == [True]:
                        ok.append(i)
            except Exception as e:  # counted by its absence from "ok"
                errors.append(f"{type(e).__name__}: {e}")
                barrier.abort()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(cmd["n"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"ok": len(ok), "errors": sorted(set(errors))[:5]}
    if op == "held_open":
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with open_ws() as a:
            first = echo_on(a, [{"text": "before"}])
            req = urllib.request.Request(cmd["plain_url"], headers=cmd.get("headers", {}))
            with opener.open(req, timeout=30) as resp:
                plain_status, plain_body = resp.status, resp.read().decode()
            second = echo_on(a, [{"text": "after"}])
        with open_ws() as b:
            third = echo_on(b, [{"text": "second connection"}])
        return {"plain_status": plain_status, "plain_body": plain_body, "a": first + second,
                "b": third}
    if op == "idle":
        with open_ws() as ws:
            active = []
            for i in range(max(1, cmd.get("active", 1))):
                if i > 0:
                    time.sleep(cmd.get("interval", 0))
                active += echo_on(ws, [{"text": f"active {i}"}])
            try:
                ws.recv(timeout=cmd["wait"])
                return {"active": active, "closed": False, "why": "a message arrived"}
            except ConnectionClosed:
                return {"active": active, "closed": True}
            except TimeoutError:
                return {"active": active, "closed": False, "why": "still open"}
    if op == "server_close":
        with open_ws() as ws:
            ws.send("close-me")
            try:
                ws.recv(timeout=30)
                return {"why": "a message arrived"}
            except ConnectionClosed as e:
                rcvd = e.rcvd
                return {"code": rcvd.code if rcvd else None, "reason": rcvd.reason if rcvd else None}
    if op == "refused_then_plain":
        u = urllib.parse.urlsplit(cmd["url"])
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        conn.request("GET", cmd["refuse_path"], headers={
            **cmd.get("headers", {}), "Connection": "Upgrade", "Upgrade": "websocket",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
        resp = conn.getresponse()
        refused = {"status": resp.status, "body": resp.read().decode(),
                   "headers": {k.lower(): v for k, v in resp.getheaders()}}
        before = conn.sock.getsockname() if conn.sock else None
        conn.request("GET", cmd["plain_path"], headers=cmd.get("headers", {}))
        resp = conn.getresponse()
        status = resp.status
        resp.read()
        after = conn.sock.getsockname() if conn.sock else None
        return {"refused": refused, "plain_status": status,
                "same_connection": before is not None and before == after}
    raise SystemExit(f"unknown op {op}")


try:
    print(json.dumps(run()))
except InvalidStatus as e:  # an upgrade refused where the command expected a tunnel
    print(json.dumps({"handshake_refused": refusal(e)}))
