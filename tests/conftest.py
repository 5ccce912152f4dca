"""Shared fixtures: a FakeRyngServer on loopback and a client bound to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from ryng_async import RetryPolicy, RyngClient
from ryng_async.testing import FakeRyngServer

TOKEN = "test-token-0123456789"

# Property tests draw the same examples on every run and every machine, so a failure in CI
# reproduces anywhere: derandomized, no example database. A test's own settings() inherit
# this (conftest loads before the test modules build theirs). HYPOTHESIS_PROFILE=explore
# draws fresh random examples, to look for new failures on purpose.
settings.register_profile("ryng", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ryng"))

# The vendor's example body (its "agentMapping" placeholder resolved to "global").
VENDOR_EXAMPLE_BODY = b"""{
  "name": "Example Campaign",
  "agentMapping": "global",
  "agents": ["ashwin@example.com", "alice@example.com"],
  "customFieldNames": {
    "customField1Name": "Name",
    "customField2Name": "Brand",
    "customField3Name": "Product"
  },
  "customerData": {
    "terminalCallbackUrl": "http://api.example.com/call-data",
    "connectCallbackUrl": "http://api.example.com/connect-data",
    "jsonData": [
      {
        "number": "+919876543210",
        "agentsAssigned": ["john@example.com", "emma@example.com"],
        "customField1": "Max"
      },
      {
        "number": "+917994771185",
        "agentsAssigned": ["agent3@example.com"],
        "customField1": "Alex"
      },
      {
        "number": "+919876543210",
        "agentsAssigned": ["agent1@example.com"],
        "customField1": "Sophia"
      },
      {
        "number": "+919876543210",
        "agentsAssigned": ["agent2@example.com"],
        "customField1": "Oliver"
      }
    ]
  }
}
"""

# Waits off: retries are tested for what they decide, not for how long they sleep.
FAST_RETRY = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=0.0)


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp and aiolimiter are asyncio-only.
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[FakeRyngServer]:
    async with FakeRyngServer(access_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeRyngServer) -> AsyncIterator[RyngClient]:
    async with RyngClient(
        base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY, random_seed=0
    ) as ryng:
        yield ryng
