"""First use of OAuth access tokens at an edge that has never seen them (another region's edge:
its own Redis prefix, no session of these tokens cached): one request per token, sequential,
over one keep-alive connection. Prints the median and p99 latency in ms.

Usage: oauth_first_use.py HOST PORT PATH TOKENS_FILE"""
import http.client
import statistics
import sys
import time

host, port, path, tokens_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tokens = [t.strip() for t in open(tokens_file) if t.strip()]
conn = http.client.HTTPConnection(host, port, timeout=10)
lat, bad = [], 0
for t in tokens:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": "Bearer " + t})
    resp = conn.getresponse()
    resp.read()
    lat.append((time.perf_counter() - start) * 1000)
    if resp.status != 200:
        bad += 1
lat.sort()
p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
print(f"first use of {len(lat)} tokens: median {statistics.median(lat):.2f} ms, p99 {p99:.2f} ms, non-200 {bad}")
