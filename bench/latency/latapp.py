"""Latency probe: the handler appends (job tag, time it started) to a file."""
import os, time
from conveyor import Conveyor
app = Conveyor()
OUT = os.environ["LAT_OUT"]

@app.task(queue="lat", max_attempts=1)
async def probe(tag: str) -> None:
    now = time.time()
    with open(OUT, "a") as f:
        f.write(f"{tag} {now}\n")
