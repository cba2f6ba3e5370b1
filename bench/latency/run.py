"""Enqueue→handler-start latency as a user sees it: producer clock before the enqueue call,
handler clock at start (one host). Worker = `conveyor worker latapp:app -c 10` (real CLI).

Usage: <checkout>/.venv/bin/python bench/latency/run.py LABEL URL CHECKOUT
(run it with the same checkout's Python, so producer and worker are the same version)."""
import json, os, subprocess, sys, tempfile, time
ver, url, root = sys.argv[1], sys.argv[2], sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(tempfile.mkdtemp(), "starts.txt")
env = {**os.environ, "LAT_OUT": out, "CONVEYOR_URL": url, "PYTHONPATH": here}
open(out, "w").close()
sys.path.insert(0, here); os.environ.update(env)
import latapp
worker = subprocess.Popen([f"{root}/.venv/bin/conveyor", "worker", "latapp:app", "-c", "10", "-q", "lat"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=here)
try:
    latapp.probe.enqueue(tag="warm")
    deadline = time.time() + 30
    while "warm" not in open(out).read():
        assert time.time() < deadline and worker.poll() is None, "worker did not start"
        time.sleep(0.05)
    sent = {}
    rate, n = 200, 1000
    begin = time.perf_counter()
    for i in range(n):
        pause = begin + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t0 = time.time()
        latapp.probe.enqueue(tag=str(i))
        sent[str(i)] = t0
    deadline = time.time() + 30
    while True:
        lines = open(out).read().split("\n")
        got = dict(l.split() for l in lines if l and not l.startswith("warm"))
        if len(got) >= n or time.time() > deadline:
            break
        time.sleep(0.1)
finally:
    worker.terminate(); worker.wait(10)
lat = sorted((float(got[k]) - sent[k]) * 1000 for k in got)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"ver": ver, "url": url.split("?")[0], "n": len(lat), "p50": round(q(0.5), 3), "p95": round(q(0.95), 3), "p99": round(q(0.99), 3)}))
