# An HTTP/1.1 client on a raw socket that reads answers with Python's http.client parser: it
# sends each step's bytes as given (several requests at once, to pipeline them) and then reads
# one response per method listed, in order, from one shared buffered reader so that nothing a
# response read ahead is lost. Argument: JSON {"port", "steps": [{"send", "read": [method]}]}.
# Prints JSON {"responses": [{"status", "headers", "body"}], "closed": bool}, where "closed"
# says whether the server closed the connection after the last step.
import http.client
import json
import socket
import sys


class Reader:
    """The socket's reader, shared by every response and never closed by one."""

    def __init__(self, sock):
        self.fp = sock.makefile("rb")

    def makefile(self, *args, **kwargs):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self.fp, name)


cmd = json.loads(sys.argv[1])
sock = socket.create_connection(("127.0.0.1", cmd["port"]), timeout=10)
reader = Reader(sock)
out = []
for step in cmd["steps"]:
    sock.sendall(step["send"].encode("latin-1"))
    for method in step["read"]:
        resp = http.client.HTTPResponse(reader, method=method)
        resp.begin()
        body = resp.read()
        out.append({
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": body.decode("latin-1"),
        })
sock.settimeout(3)
try:
    closed = reader.fp.read1(1) == b""
except (socket.timeout, TimeoutError):
    closed = False
except OSError:
    closed = True
print(json.dumps({"responses": out, "closed": closed}))
