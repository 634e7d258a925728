# A WebSocket upstream written with the `websockets` package (an RFC 6455 implementation
# independent of the gateway's tunnel). Prints its port first. Paths:
#   /_seen      (asked directly, not through the gateway) the requests seen so far, as JSON:
#               [{"path": ..., "headers": [[name, value], ...]}, ...]
#   /refuse...  refuses the upgrade: 403, body "upgrade refused by upstream", X-Refused-By
#   anything    with an Upgrade header: the WebSocket handshake, then every message is echoed;
#               without one: 200 {"plain": true, "path": ...} (a plain GET to a WebSocket path);
#               the message "close-me" is answered by a close, code 4000 reason "bye"
# Pings are off, so an idle tunnel carries no byte at all.
import asyncio
import json

from websockets.asyncio.server import serve

seen = []


def json_response(connection, status, value):
    response = connection.respond(status, json.dumps(value))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


async def process_request(connection, request):
    if request.path == "/_seen":
        return json_response(connection, 200, seen)
    seen.append({"path": request.path, "headers": [[k, v] for k, v in request.headers.raw_items()]})
    if request.path.startswith("/refuse"):
        response = connection.respond(403, "upgrade refused by upstream")
        response.headers["X-Refused-By"] = "ws-upstream"
        return response
    if "Upgrade" not in request.headers:
        return json_response(connection, 200, {"plain": True, "path": request.path})
    return None


async def echo(ws):
    async for message in ws:
        if message == "close-me":
            await ws.close(4000, "bye")
            return
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 0, process_request=process_request, max_size=None,
                     ping_interval=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
