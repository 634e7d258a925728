# An upstream that answers every request with 101, whatever was asked: argv[1] is the Upgrade
# it names ("-" for none). It never sends a Sec-WebSocket-Accept, then writes an HTTP response
# as if the tunnel carried one, and records every request head it read (GET /_heads, on a
# connection that asks for nothing, lists them). Prints its port first.
import json
import socket
import sys
import threading

UPGRADE = sys.argv[1]
heads = []


def serve(conn):
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        if head.startswith("GET /_heads "):
            body = json.dumps(heads).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        heads.append(head)
        upgrade = "" if UPGRADE == "-" else f"Upgrade: {UPGRADE}\r\n"
        conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n{upgrade}\r\n".encode()
                     + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        # Whatever else arrives would be a request the gateway never checked: record it.
        more = conn.recv(65536)
        if more:
            heads.append(more.decode("latin-1"))


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
while True:
    c, _ = listener.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
