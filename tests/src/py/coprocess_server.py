# A Tyk gRPC coprocess plugin server written with grpcio, from the gateway's own .proto files
# compiled here with grpcio-tools: what an existing Tyk plugin server does. Hooks by name:
#   allow   Authorization "good-*" -> a session (3 requests per 60 s) named by the token, sets
#           X-Plugin-User and deletes X-Remove-Me upstream; anything else -> 403 with a body
#   slow    sleeps 3 s, then as allow
#   cached  as allow, with an id_extractor_deadline a minute ahead
#   bench   as allow without a rate limit and without counting (the benchmark's hook)
# Calls per hook are written as JSON to argv[2] after each call. Prints its port first.
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import grpc_tools
from grpc_tools import protoc

proto_dir, counts_path = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
protos = [os.path.join(proto_dir, f) for f in sorted(os.listdir(proto_dir)) if f.endswith(".proto")]
include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
if protoc.main(["protoc", "-I" + proto_dir, "-I" + include, "--python_out=" + out,
                "--grpc_python_out=" + out] + protos) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out)
import coprocess_common_pb2 as common  # noqa: E402
import coprocess_object_pb2 as objects  # noqa: E402
import coprocess_object_pb2_grpc as rpc  # noqa: E402

counts = {}
lock = threading.Lock()


def count(hook):
    with lock:
        counts[hook] = counts.get(hook, 0) + 1
        tmp = counts_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(counts, f)
        os.replace(tmp, counts_path)


class Dispatcher(rpc.DispatcherServicer):
    def Dispatch(self, obj, context):
        if obj.hook_name == "bench":
            obj.session.rate = 0
            obj.session.quota_max = -1
            obj.session.metadata["token"] = obj.request.headers.get("Authorization", "")
            return obj
        count(obj.hook_name)
        if obj.hook_type != common.CustomKeyCheck:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an auth hook")
        if obj.spec.get("APIID", "") == "":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no APIID in spec")
        if obj.hook_name == "slow":
            time.sleep(3)
        token = obj.request.headers.get("Authorization", "")
        if not token.startswith("good-"):
            obj.request.return_overrides.response_code = 403
            obj.request.return_overrides.response_error = "plugin says no"
            obj.request.return_overrides.headers["X-Plugin-Reason"] = "bad-token"
            return obj
        obj.session.rate = 3
        obj.session.per = 60
        obj.session.quota_max = -1
        obj.session.metadata["token"] = token
        obj.metadata["user"] = token
        if obj.hook_name == "cached":
            obj.session.id_extractor_deadline = int(time.time()) + 60
        obj.request.set_headers["X-Plugin-User"] = token
        obj.request.set_headers["X-Plugin-Method"] = obj.request.method
        obj.request.delete_headers.append("X-Remove-Me")
        return obj

    def DispatchEvent(self, event, context):
        return objects.EventReply()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
rpc.add_DispatcherServicer_to_server(Dispatcher(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
