"""The demo shop: four realistic tasks that show the engine's paths.

- `fetch_page`: async I/O with latency and progress reports (queue `io`).
- `make_thumbnail`: CPU-bound sync work in the thread pool (queue `cpu`).
- `charge_card`: a flaky payment API that fails now and then and succeeds on retry (`payments`).
- `sync_crm`: an integration whose server is down; it always fails and ends in the failed set.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from conveyor import Backoff, Conveyor, Priority, current_job

app = Conveyor()


@app.task(queue="io", timeout=5)
async def fetch_page(url: str) -> dict[str, object]:
    job = current_job()
    for step in (25, 50, 75):
        await asyncio.sleep(random.uniform(0.03, 0.12))
        job.progress(step)
    return {"url": url, "status": 200, "bytes": random.randint(2_000, 90_000)}


@app.task(queue="cpu")
def make_thumbnail(image_id: int, size: int = 128) -> str:
    digest = hashlib.sha256(str(image_id).encode())
    for _ in range(2_000 * size // 128):
        digest = hashlib.sha256(digest.digest())
    return f"thumb-{image_id}-{size}-{digest.hexdigest()[:8]}"


@app.task(
    queue="payments",
    priority=Priority.HIGH,
    max_attempts=5,
    backoff=Backoff("exponential", base=0.1, jitter=0.2),
)
def charge_card(order_id: int, cents: int) -> dict[str, object]:
    if random.random() < 0.35:
        raise ConnectionError("payment gateway timed out")
    return {"order_id": order_id, "charged": cents}


@app.task(queue="integrations", max_attempts=2, backoff=Backoff("fixed", base=0.2))
async def sync_crm(account: str) -> None:
    await asyncio.sleep(0.01)
    raise ConnectionError(f"CRM at crm.internal refused the connection for {account}")
