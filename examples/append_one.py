"""Send one append to a fake Ryng server (swap in your subdomain and token for the real API)."""

import asyncio

from ryng_async import Lead, RyngClient
from ryng_async.testing import FakeRyngServer


async def main() -> None:
    async with FakeRyngServer() as server:
        async with RyngClient(base_url=server.base_url, access_token=server.access_token) as client:
            response = await client.append(
                "42",
                [Lead(number="+919876543210", custom_fields={1: "Max"})],
                agent_mapping="global",
                agents=["ashwin@example.com"],
                custom_field_names={"customField1Name": "Name"},
            )
            print(response.message)
            print("server received:", server.leads)


asyncio.run(main())
