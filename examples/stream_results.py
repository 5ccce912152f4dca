"""Watch batch results as they complete, and stop a load early without losing track."""

import asyncio

from ryng_async import RyngClient
from ryng_async.testing import FakeRyngServer


async def main() -> None:
    async with FakeRyngServer(latency=0.01) as server:
        async with RyngClient(base_url=server.base_url, access_token=server.access_token) as client:
            rows = ({"number": f"+91{9000000000 + i}"} for i in range(50_000))
            async with client.stream_append("42", rows, batch_size=500) as results:
                async for result in results:
                    print(result.index, result.outcome, result.count, result.attempts)
                    if result.index >= 20:
                        break  # stops sending; batches in flight still get real outcomes
            print(results.report)


asyncio.run(main())
