"""`python -m bench.http_floor`: the HTTP floor of a code, a baseline of the overhead benchmark.

What the two Seam calls of one code cost a process by themselves: generate_code, then create
with that PIN, over one httpx.AsyncClient configured as `worker.seam.SeamClient` configures
its own (the same endpoint, headers, timeout), `CODEPROV_MAX_JOBS` pairs in flight, nothing
else: no arq, no Redis, no limiter, no state. Prints one JSON line: pairs per second and the
process's CPU (cores) meanwhile. With the arq no-op rate it gives the ceiling of a worker whose
only costs were arq's per-job cost and the two requests: 1 / (1/no-op + 1/pairs).

Environment: SEAM_ENDPOINT, SEAM_API_KEY, CODEPROV_MAX_JOBS; argv: pairs, then device ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta

import anyio
import httpx


async def pairs(n: int, devices: list[str], concurrency: int) -> tuple[float, float]:
    starts = datetime.now(UTC) + timedelta(days=2)
    window = {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=2)).isoformat()}
    headers = {"Authorization": f"Bearer {os.environ['SEAM_API_KEY']}",
               "Accept": "application/json"}
    limit = anyio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=os.environ["SEAM_ENDPOINT"], headers=headers,
                                 timeout=6.0, follow_redirects=False) as http:

        async def one(i: int) -> None:
            device = devices[i % len(devices)]
            async with limit:
                generated = await http.post("/access_codes/generate_code",
                                            json={"device_id": device})
                code = generated.json()["generated_code"]["code"]
                created = await http.post("/access_codes/create", json={
                    "device_id": device, "code": code, "name": f"floor-{i}", **window})
                created.raise_for_status()

        await one(0)  # connection set up outside the measurement
        wall, cpu = time.monotonic(), time.process_time()
        async with anyio.create_task_group() as tg:
            for i in range(1, n + 1):
                tg.start_soon(one, i)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return n / wall, cpu / wall


def main() -> None:
    n, devices = int(sys.argv[1]), sys.argv[2:]
    concurrency = int(os.environ.get("CODEPROV_MAX_JOBS", "10"))
    per_s, cpu = asyncio.run(pairs(n, devices, concurrency))
    print(json.dumps({"pairs_per_s": round(per_s, 1), "cpu": round(cpu, 2)}))


if __name__ == "__main__":
    main()
