"""Screenshot the dashboard under a mixed load, for the README (docs/dashboard.png).

Starts the simulator and a daemon in this process, runs clients that make quick and slow
calls, some that fail (provider 400s, 429s and 500s, deadlines), then opens the page in
headless Chromium (Debian's `chromium`) and saves a PNG.

    python scripts/dashboard_screenshot.py                 # 4 minutes of load, docs/dashboard.png
    python scripts/dashboard_screenshot.py --seconds 20 --out /tmp/d.png
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chromium import open_page

from exai.client import ExaiClient, RpcError, connect
from exai.config import Settings
from exai.logs import setup_logging
from exai.providers.simulator import serve_simulator
from exai.server import Bound, serve

MODELS = ("kimi-k2-0905-preview", "glm-4.6")


def sim(prompt: str, **behaviour: Any) -> str:
    return f"{prompt}\n#sim {json.dumps(behaviour)}" if behaviour else prompt


async def one_call(client: ExaiClient, rng: random.Random, n: int) -> None:
    roll = rng.random()
    model = rng.choice(MODELS)
    timeout: float | None = None
    if roll < 0.70:
        prompt = sim(f"review {n}", latency_s=round(rng.uniform(0.05, 0.8), 2), chunks=8, chunk_delay_s=0.05)
    elif roll < 0.75:
        slow = {"latency_s": round(rng.uniform(1, 4), 1), "chunks": rng.randint(20, 50), "chunk_delay_s": 0.4}
        prompt = sim(f"slow {n}", **slow)
    elif roll < 0.85:
        prompt = sim(f"bad {n}", status=400)
    elif roll < 0.92:
        prompt = sim(f"busy {n}", status=429, retry_after="1", fail_times=1)
    elif roll < 0.96:
        prompt, timeout = sim(f"deadline {n}", latency_s=6), 2.0
    else:
        prompt = sim(f"down {n}", status=503, fail_times=2)
    try:
        await client.call_tool("chat", {"prompt": prompt, "model": model}, timeout=timeout, on_progress=lambda _: None)
    except RpcError:
        pass


async def client_loop(url: str, seed: int, until: float) -> None:
    rng = random.Random(seed)
    async with connect(url) as client, trio.open_nursery() as nursery:
        n = 0
        while trio.current_time() < until:
            n += 1
            nursery.start_soon(one_call, client, rng, n)
            await trio.sleep(rng.expovariate(1.5))
        nursery.cancel_scope.deadline = trio.current_time() + 20


async def main(seconds: float, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            simulator = await nursery.start(serve_simulator, "127.0.0.1", 0)
            settings = Settings(
                host="127.0.0.1", port=0, monitor_port=0, state_dir=Path(tmp) / "state", allowed_roots=[tmp],
                kimi_api_key="demo", kimi_base_url=simulator.url, glm_api_key="demo", glm_base_url=simulator.url,
                default_model=MODELS[0], provider_max_retries=2, log_level="ERROR", shutdown_grace_secs=1,
                kimi_max_inflight=12, glm_max_inflight=12,
            )
            setup_logging(settings)
            bound: Bound = await nursery.start(partial(serve, settings))
            shot_at = trio.current_time() + seconds
            for seed in range(6):
                nursery.start_soon(client_loop, bound.url, seed, shot_at + 30)
            async with open_page(Path(tmp) / "chromium") as page:  # the load goes on meanwhile
                await trio.sleep_until(shot_at - 3)
                await page.goto(f"{bound.monitor_url}/")
                await trio.sleep(3)
                await page.screenshot(out)
            print(f"saved {out}")
            bound.daemon.request_shutdown()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="how long to run the load first")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "dashboard.png")
    opts = parser.parse_args()
    trio.run(main, opts.seconds, opts.out)
