"""The provider path alone: CPU per `ModelGateway.complete`, in this process, against h11sim.

CPU time (not wall time) per call is what the daemon pays for the provider path; it is
robust to other processes sharing the machine. Streams by default (the daemon's hot path).

    python scripts/bench_provider.py [--calls 3000] [--concurrency 1] [--chunks 5] [--cprofile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from exai.config import load_settings
from exai.logs import setup_logging
from exai.providers.base import CallBudget
from exai.providers.gateway import ModelGateway

H11SIM = [sys.executable, str(Path(__file__).resolve().parent / "h11sim.py"), "--port", "0"]


async def run(
    calls: int, concurrency: int, stream: bool, profile: str | None, chunks: int, chunk_delay: float
) -> dict[str, float]:
    sim = await trio.lowlevel.open_process(H11SIM, stdout=subprocess.PIPE)
    try:
        line = b""
        while b"/v1" not in line:
            more = await sim.stdout.receive_some()
            if not more:
                raise RuntimeError(f"the simulator exited: {line!r}")
            line += more
        url = line.split()[-1].decode()
        async with httpx.AsyncClient() as admin:
            (await admin.post(url.rsplit("/v1", 1)[0] + "/_sim/config", json={"chunks": chunks, "chunk_delay_s": chunk_delay})).raise_for_status()
        settings = load_settings(kimi_api_key="bench", kimi_base_url=url, glm_api_key=None)
        limiters = {"kimi": trio.CapacityLimiter(1000), "glm": trio.CapacityLimiter(4)}
        setup_logging(settings)  # as the daemon does: INFO to stderr
        gateway = ModelGateway.from_settings(settings, limiters)
        messages = [{"role": "user", "content": "benchmark"}]

        async def on_text(text: str, tokens: int, thinking: bool) -> None:
            pass

        async def one() -> None:
            await gateway.complete(
                model="kimi-k2-0905-preview", messages=messages, budget=CallBudget(5),
                on_text=on_text if stream else None, request_id="bench",
            )

        async def batch(n: int) -> None:
            async def worker(k: int) -> None:
                for _ in range(k):
                    await one()

            async with trio.open_nursery() as nursery:
                for i in range(concurrency):
                    nursery.start_soon(worker, n // concurrency + (i < n % concurrency))

        async with gateway:
            await batch(200)  # warm up
            profiler = cProfile.Profile() if profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            await batch(calls)
            if profiler:
                profiler.disable()
                profiler.dump_stats(profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"calls": calls, "concurrency": concurrency, "stream": stream, "chunks": chunks,
                "cpu_ms_per_call": round(cpu * 1000 / calls, 4), "wall_ms_per_call": round(wall * 1000 / calls, 4)}
    finally:
        sim.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--cprofile")
    parser.add_argument("--chunks", type=int, default=5, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks (each its own read)")
    parser.add_argument("--repeat", type=int, default=3, help="report the median of this many rounds")
    opts = parser.parse_args()
    os.environ.setdefault("EXAI_LOG_LEVEL", "INFO")
    results = [trio.run(run, opts.calls, opts.concurrency, not opts.no_stream, opts.cprofile, opts.chunks, opts.chunk_delay) for _ in range(opts.repeat)]
    results.sort(key=lambda r: r["cpu_ms_per_call"])
    print(results[len(results) // 2], "all cpu ms:", [r["cpu_ms_per_call"] for r in results])
