# An OTLP/gRPC trace collector built on the OpenTelemetry project's own generated code
# (PyPI opentelemetry-proto) and grpcio, independent of the gateway's exporter. Prints the port
# of its HTTP query server first; there:
#   GET /grpc   -> {"port": N}: where the OTLP/gRPC TraceService listens
#   GET /spans  -> every span received so far, flattened to JSON:
#                  {"trace_id", "span_id", "parent_span_id" (hex, "" for none), "name", "kind"
#                   (SERVER, CLIENT, ...), "start", "end" (unix ns), "attributes" {key: value},
#                   "status" (UNSET, OK, ERROR), "status_message", "resource" {key: value},
#                   "scope"}
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()
SPANS = []


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        rows = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append({
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": trace_pb2.Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": attributes(s.attributes),
                        "status": trace_pb2.Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                        "status_message": s.status.message,
                        "flags": s.flags,
                        "resource": resource,
                        "scope": ss.scope.name,
                    })
        with LOCK:
            SPANS.extend(rows)
        return trace_service_pb2.ExportTraceServiceResponse()


grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), grpc_server)
GRPC_PORT = grpc_server.add_insecure_port("127.0.0.1:0")
grpc_server.start()


class Query(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/grpc":
            body = {"port": GRPC_PORT}
        elif self.path == "/spans":
            with LOCK:
                body = list(SPANS)
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http = ThreadingHTTPServer(("127.0.0.1", 0), Query)
print(http.server_address[1], flush=True)
http.serve_forever()
