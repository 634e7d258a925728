# A gRPC upstream written with grpcio: generic handlers on raw bytes (no generated code), service
# portcullis.test.Echo, named argv[1] (default "grpc"); with argv[2] and argv[3] (certificate
# and key PEM files) it serves TLS, HTTP/2 by ALPN. Prints its port first. Methods:
#   Unary          replies JSON {"body": request, "metadata": {name: value}, "server": name},
#                  with initial metadata x-initial: hello and trailing metadata x-trailer: done
#   Fail           aborts with NOT_FOUND "no such thing" (a trailers-only answer)
#   FailLate       sends one message, then ends with ABORTED "gave up midway" (in trailers)
#   ServerStream   request is a count n: replies "msg-0" .. "msg-(n-1)", trailer x-count: n
#   ClientStream   replies the requests joined with "+"
#   Bidi           echoes every request as it arrives ("echo:" + request)
#   Endless        "tick" every 20 ms for 10 minutes: within a test only a cancel ends it
#   Cancelled      replies how many Endless calls have ended so far
import json
import sys
import time
from concurrent import futures

import grpc

NAME = sys.argv[1] if len(sys.argv) > 1 else "grpc"


def unary(request, context):
    context.send_initial_metadata((("x-initial", "hello"),))
    context.set_trailing_metadata((("x-trailer", "done"),))
    metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    return json.dumps({"body": request.decode(), "metadata": metadata, "server": NAME}).encode()


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def fail_late(request, context):
    yield b"first"
    context.abort(grpc.StatusCode.ABORTED, "gave up midway")


def server_stream(request, context):
    n = int(request.decode())
    for i in range(n):
        yield f"msg-{i}".encode()
    context.set_trailing_metadata((("x-count", str(n)),))


def client_stream(requests, context):
    return b"+".join(requests)


def bidi(requests, context):
    for r in requests:
        yield b"echo:" + r


cancelled = []


def endless(request, context):
    context.add_callback(lambda: cancelled.append(1))
    for _ in range(30000):
        if not context.is_active():
            return
        yield b"tick"
        time.sleep(0.02)


def cancelled_count(request, context):
    return str(len(cancelled)).encode()


handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "FailLate": grpc.unary_stream_rpc_method_handler(fail_late),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Endless": grpc.unary_stream_rpc_method_handler(endless),
    "Cancelled": grpc.unary_unary_rpc_method_handler(cancelled_count),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("portcullis.test.Echo",
                                                                      handlers),))
if len(sys.argv) > 3:
    with open(sys.argv[2], "rb") as cert, open(sys.argv[3], "rb") as key:
        credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdout.close()
server.wait_for_termination()
