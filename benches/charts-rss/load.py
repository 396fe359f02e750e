# Fills a running pulse-metrics with 12,750 series x 1 h of 10 s points
# (4.59 M points), as in issue 10's scenario, through the write API.
# Usage: python3 load.py http://127.0.0.1:PORT
import json, sys, time, urllib.request, urllib.error
base = sys.argv[1]
now = int(time.time()) // 10 * 10
series = [(t, f"pve{c}:{i}", m) for c in range(5) for i in range(850) for (t, m) in (("vm", "cpu"), ("vm", "memory"), ("vm", "disk"))]
assert len(series) == 12750
batch = []
sent = 0
def post(points):
    body = json.dumps({"points": points}).encode()
    while True:
        req = urllib.request.Request(base + "/api/metrics-store/write", data=body, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req).read()
            return
        except urllib.error.HTTPError as e:
            if e.code == 503:
                time.sleep(1); continue
            raise
for step in range(360):
    ts = (now - 3590 + step * 10) * 1000
    for (t, i, m) in series:
        batch.append({"resourceType": t, "resourceId": i, "metric": m, "value": (step * 7 + len(i)) % 100 + 0.5, "timestamp": ts})
        if len(batch) == 60000:
            post(batch); sent += len(batch); batch = []
post(batch); sent += len(batch)
print("sent", sent)
