# A streaming HTTP/1.1 upstream on the standard library's http.server. Prints its port first.
# Paths (the /_ ones are asked directly, not through the gateway):
#   GET /sse        text/event-stream: "data: one", then, once released, "data: two"
#   GET /chunks?n=N N chunks "chunk-i;", each after the first only once released
#   GET /_release   lets the waiting stream send its next event or chunk
#   POST|PUT /upload  reads the body (Content-Length or chunked), answers JSON
#                   {"bytes": n, "expect": <Expect header or null>, "head": first 64 bytes}
#   GET /big?bytes=N  N zero bytes with a Content-Length
#   GET /forever    chunked "tick" lines until writing fails; the failure is recorded
#   GET /_state     {"aborted": <exception name or null>, "ticks": n}
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

release = threading.Semaphore(0)
state = {"aborted": None, "ticks": 0}
BLOCK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply_json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def start_chunked(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def wait_release(self):
        if not release.acquire(timeout=120):
            raise TimeoutError("never released")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/_release":
            release.release()
            return self.reply_json({"released": True})
        if url.path == "/_state":
            return self.reply_json(state)
        if url.path == "/sse":
            self.start_chunked("text/event-stream")
            self.chunk(b"data: one\n\n")
            self.wait_release()
            self.chunk(b"data: two\n\n")
            return self.chunk(b"")
        if url.path == "/chunks":
            self.start_chunked("text/plain")
            for i in range(int(query.get("n", "3"))):
                if i > 0:
                    self.wait_release()
                self.chunk(b"chunk-%d;" % i)
            return self.chunk(b"")
        if url.path == "/big":
            left = int(query["bytes"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(left))
            self.end_headers()
            zeros = bytes(BLOCK)
            while left > 0:
                n = min(left, BLOCK)
                self.wfile.write(zeros[:n])
                left -= n
            return
        if url.path == "/forever":
            self.start_chunked("text/plain")
            try:
                for _ in range(30000):
                    self.chunk(b"tick\n")
                    state["ticks"] += 1
                    time.sleep(0.02)
            except OSError as e:
                state["aborted"] = type(e).__name__
            self.close_connection = True
            return
        self.send_error(404)

    def read_body(self):
        head, total = b"", 0

        def take(data):
            nonlocal head, total
            if len(head) < 64:
                head += data[:64 - len(head)]
            total += len(data)

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return head, total
                while size > 0:
                    data = self.rfile.read(min(size, BLOCK))
                    if not data:
                        raise EOFError("body cut short")
                    take(data)
                    size -= len(data)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            data = self.rfile.read(min(left, BLOCK))
            if not data:
                raise EOFError("body cut short")
            take(data)
            left -= len(data)
        return head, total

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/upload":
            return self.send_error(404)
        head, total = self.read_body()
        self.reply_json({"bytes": total, "expect": self.headers.get("Expect"),
                         "head": head.decode("latin-1")})

    do_PUT = do_POST


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
