#!/usr/bin/env python3
"""One client, one request at a time: POST /Counter/k<i>/add over 100 keys for
SECONDS, then the latency percentiles and every request slower than SLOW_MS
with the time it started, so that periodic stalls show as a period.

    scripts/seq-latency.py [http-port=7101] [seconds=10] [slow-ms=5]
"""
import http.client
import sys
import time

port = int(sys.argv[1]) if len(sys.argv) > 1 else 7101
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
slow_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
samples = []
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < seconds:
    key = i % 100
    i += 1
    start = time.monotonic()
    conn.request("POST", f"/Counter/k{key}/add", body="1",
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    samples.append((start - t0, (time.monotonic() - start) * 1000, key, response.status))
lat = sorted(s[1] for s in samples)
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
print(f"{len(samples)} requests: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {lat[-1]:.2f} ms")
statuses = {}
for s in samples:
    statuses[s[3]] = statuses.get(s[3], 0) + 1
print("statuses:", statuses)
slow = [s for s in samples if s[1] > slow_ms]
print(f"slower than {slow_ms} ms: {len(slow)}")
for at, ms, key, status in slow[:100]:
    print(f"  t={at:8.3f} s  {ms:7.1f} ms  k{key}  {status}")
