# A hand-written HTTP/1.1 upstream on raw sockets (socketserver), for the response framings a
# gateway must read right. Prints its port first. Paths:
#   /len            "hello" with Content-Length, keep-alive
#   /chunked        chunked with a chunk extension and a trailer, keep-alive
#   /http10         HTTP/1.0, no Content-Length: the body ends when the server closes
#   /hints          103 Early Hints, then 200 "hinted"
#   /conflict       two different Content-Length values (a gateway must refuse it)
#   /junk           "hello" with Content-Length, then bytes no request asked for
#   /drop           "dropped" with keep-alive framing, then the server closes without saying so
#   /conns          the number of connections accepted so far, as text
#   /empty          204, no body
#   /post           (POST) the body length it read, as text
#   /early          413 "too big!" before reading the request body, then closes
# HEAD on any path answers the GET's head without a body.
import socketserver
import sys
import threading

lock = threading.Lock()
accepted = [0]


def response(status, headers, body=b"", version=b"HTTP/1.1"):
    head = version + b" " + status + b"\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        with lock:
            accepted[0] += 1
        buf = b""
        sock = self.request
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if target == b"/early":
                # Refuses the upload before reading it, as a size-limited app does.
                sock.sendall(response(b"413 Payload Too Large", [(b"Content-Length", b"8"), (b"Connection", b"close")], b"too big!"))
                return
            while len(buf) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            if not self.answer(sock, method, target, body):
                return

    def answer(self, sock, method, target, body):
        head_only = method == b"HEAD"

        def send(raw_head, raw_body=b""):
            sock.sendall(raw_head if head_only else raw_head + raw_body)

        if target == b"/len":
            send(response(b"200 OK", [(b"Content-Length", b"5")]), b"hello")
        elif target == b"/chunked":
            send(
                response(b"200 OK", [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"x-checksum")]),
                b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nx-checksum: 5\r\n\r\n",
            )
        elif target == b"/http10":
            send(response(b"200 OK", [(b"Content-Type", b"text/plain")], version=b"HTTP/1.0"), b"until close")
            return False
        elif target == b"/hints":
            sock.sendall(response(b"103 Early Hints", [(b"Link", b"</style.css>; rel=preload")]))
            send(response(b"200 OK", [(b"Content-Length", b"6")]), b"hinted")
        elif target == b"/conflict":
            send(response(b"200 OK", [(b"Content-Length", b"3"), (b"Content-Length", b"4")]), b"abcd")
            return False
        elif target == b"/junk":
            send(response(b"200 OK", [(b"Content-Length", b"5")]), b"helloHTTP/1.1 200 OK\r\n\r\n")
        elif target == b"/drop":
            send(response(b"200 OK", [(b"Content-Length", b"7")]), b"dropped")
            return False
        elif target == b"/conns":
            with lock:
                text = str(accepted[0]).encode()
            send(response(b"200 OK", [(b"Content-Length", str(len(text)).encode())]), text)
        elif target == b"/empty":
            send(response(b"204 No Content", []))
        elif target == b"/post":
            text = str(len(body)).encode()
            send(response(b"200 OK", [(b"Content-Length", str(len(text)).encode())]), text)
        else:
            send(response(b"404 Not Found", [(b"Content-Length", b"0")]))
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
