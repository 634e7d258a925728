# A gRPC client written with grpcio (HTTP/2 without TLS, prior knowledge), driven by one JSON
# command in argv[1]: {"target": "127.0.0.1:port", "metadata": [[k, v], ...], "calls": [...]};
# with "ca_file" it speaks TLS (HTTP/2 by ALPN) trusting that CA instead.
# Each call is {"kind": "unary"|"server_stream"|"client_stream"|"bidi", "method": "/pkg.Svc/M",
# "requests": [str, ...]}; a unary or server-streaming call sends requests[0]; a server-streaming
# call with "cancel_after": n cancels the call once n replies arrived. Bidi sends each
# request only after the reply to the previous one arrived (ping-pong: proves both directions
# stream). Prints a JSON list, one result per call: {"code", "details", "responses",
# "initial", "trailing"}.
import json
import queue
import sys

import grpc

cmd = json.loads(sys.argv[1])
metadata = [tuple(m) for m in cmd.get("metadata", [])]
TIMEOUT = 60


def md(pairs):
    return {k: v for k, v in (pairs or ()) if isinstance(v, str)}


def outcome(call, responses):
    return {"code": call.code().name, "details": call.details(), "responses": responses,
            "initial": md(call.initial_metadata()), "trailing": md(call.trailing_metadata())}


def run(channel, c):
    kind, requests = c["kind"], [r.encode() for r in c.get("requests", [])]
    if kind == "unary":
        stub = channel.unary_unary(c["method"])
        try:
            response, call = stub.with_call(requests[0], metadata=metadata, timeout=TIMEOUT)
            return outcome(call, [response.decode()])
        except grpc.RpcError as e:
            return outcome(e, [])
    if kind == "client_stream":
        stub = channel.stream_unary(c["method"])
        try:
            response, call = stub.with_call(iter(requests), metadata=metadata, timeout=TIMEOUT)
            return outcome(call, [response.decode()])
        except grpc.RpcError as e:
            return outcome(e, [])
    if kind == "server_stream":
        call = channel.unary_stream(c["method"])(requests[0], metadata=metadata,
                                                 timeout=TIMEOUT)
    elif kind == "bidi":
        replied = queue.Queue()

        def ping_pong():
            for i, r in enumerate(requests):
                if i > 0:
                    replied.get(timeout=TIMEOUT)
                yield r

        call = channel.stream_stream(c["method"])(ping_pong(), metadata=metadata,
                                                  timeout=TIMEOUT)
    else:
        raise SystemExit(f"unknown kind {kind}")
    responses = []
    try:
        for r in call:
            responses.append(r.decode())
            if kind == "bidi":
                replied.put(None)
            if len(responses) == c.get("cancel_after"):
                call.cancel()
    except grpc.RpcError:
        pass
    return outcome(call, responses)


if "ca_file" in cmd:
    with open(cmd["ca_file"], "rb") as f:
        channel = grpc.secure_channel(cmd["target"], grpc.ssl_channel_credentials(f.read()))
else:
    channel = grpc.insecure_channel(cmd["target"])
with channel:
    print(json.dumps([run(channel, c) for c in cmd["calls"]]))
