"""Upload -> ready for one photo through a real server's avatar API on the CPU (weight-free path,
the astronaut at 512 px), the photos after a first: with a fresh reconstruction process for every
photo (``jobs_per_child=1``, how jobs ran before) and with one process serving them all. Run:

    python -m pytest benchmarks/test_jobs_cpu.py --benchmark-json=benchmarks/results/cpu-upload-to-ready.json
"""

import asyncio

import aiohttp
import pytest

from splatcast.streaming.server import SERVER_KEY
from tests.test_api import astronaut_png, reconstructed, start


@pytest.mark.parametrize("jobs_per_child", [1, 50])
def test_upload_to_ready(benchmark, tmp_path, jobs_per_child):
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(start(tmp_path))
    server.app[SERVER_KEY].jobs.jobs_per_child = jobs_per_child
    photo = astronaut_png(512)

    async def one_photo() -> None:
        async with aiohttp.ClientSession() as http:
            record = await reconstructed(http, server, photo)
        assert record["status"] == "ready", record

    try:
        benchmark.pedantic(lambda: loop.run_until_complete(one_photo()), rounds=5, warmup_rounds=1)
    finally:
        loop.run_until_complete(server.close())
        loop.close()
    benchmark.extra_info.update({"jobs_per_child": jobs_per_child, "path": "weight-free", "photo": "astronaut, 512 x 512"})
