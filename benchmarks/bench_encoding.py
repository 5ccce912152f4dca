"""Encoding: rows to request bodies, in leads/s and MB/s, no network.

The SDK's path is the bulk engine's (``Intake.pack``): ``proven_rows`` on each chunk
(wire-form dicts as given, proven valid by ``leads_are_valid``, one loop of the compiled
``_speedups`` module; ``Lead`` s of one shape read into columns by its ``lead_columns`` and
made ``WireLead`` structs), then ``Packer.add``,
which cuts batches and encodes each body once with ``BodyTemplate.body``. A chunk the fast
path cannot vouch for goes lead by lead through ``validate_lead`` (the reference rules,
which name the field and position). The
baselines encode the same dicts, in the same 1,000-lead envelopes, validating nothing.
MB/s counts each contender's own output (stdlib json's default separators add spaces).
"One str.join pass over the values" is no contender but a floor: the cheapest C-level pass
that looks at every value once from Python, what the pure-Python twin of the check
(``python_leads_are_valid``, used where the module is not built) costs at least.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

import msgspec
import orjson

from . import _data
from ._harness import BenchResult, Context, Table, Target, alternate, median, ratio, spread

NAME = "encoding"
TITLE = "Encoding rows into request bodies"
BATCH = 1000

SDK_DICTS = "SDK validate + pack, wire dicts"
SDK_LEADS = "SDK validate + pack, Lead objects"
SDK_CHECK = "SDK leads_are_valid only (dicts)"
SDK_BODY = "SDK BodyTemplate.body only (dicts)"
MSGSPEC = "msgspec.json.encode"
ORJSON = "orjson.dumps"
STDLIB = "json.dumps (stdlib)"
FLOOR = "floor: one str.join pass over the values"


def _sdk_pack(chunks: list[list[Any]]) -> int:
    """The bulk engine's path from input chunks to bodies; return the bytes made."""
    from ryng_async._batching import BodyTemplate, Packer
    from ryng_async._config import DEFAULT_MAX_BATCH_BYTES
    from ryng_async._lead_checks import proven_rows, validate_lead
    from ryng_async._validate import build_request

    packer = Packer(BodyTemplate(build_request()), BATCH, DEFAULT_MAX_BATCH_BYTES)
    size = 0
    start = 0
    for chunk in chunks:
        rows = proven_rows(chunk)
        if rows is None:
            rows = [validate_lead(lead, p) for p, lead in enumerate(chunk, start)]
        positions = list(range(start, start + len(chunk)))
        start += len(chunk)
        size += sum(len(batch.body) for batch in packer.add(rows, positions))
    size += sum(len(batch.body) for batch in packer.finish())
    return size


def _sdk_check(chunks: list[list[Any]]) -> int:
    from ryng_async._lead_checks import leads_are_valid

    for chunk in chunks:
        if not leads_are_valid(chunk):
            raise AssertionError("the benchmark rows must take the fast path")
    return 0


def _sdk_body(chunks: list[list[Any]]) -> int:
    from ryng_async._batching import BodyTemplate
    from ryng_async._validate import build_request

    template = BodyTemplate(build_request())
    return sum(len(template.body(chunk)) for chunk in chunks)


def _one_pass(chunks: list[list[Any]]) -> int:
    for chunk in chunks:
        "".join(chain.from_iterable(map(dict.values, chunk)))
    return 0


def _msgspec(chunks: list[list[Any]]) -> int:
    encode = msgspec.json.Encoder().encode
    return sum(len(encode(_data.envelope(chunk))) for chunk in chunks)


def _orjson(chunks: list[list[Any]]) -> int:
    return sum(len(orjson.dumps(_data.envelope(chunk))) for chunk in chunks)


def _stdlib(chunks: list[list[Any]]) -> int:
    return sum(len(json.dumps(_data.envelope(chunk)).encode()) for chunk in chunks)


def _timed(work: Callable[[list[list[Any]]], int], chunks: list[list[Any]]) -> Any:
    def go() -> tuple[float, int]:
        start = time.perf_counter()
        size = work(chunks)
        return time.perf_counter() - start, size

    return go


def run(ctx: Context) -> BenchResult:
    from ryng_async import Lead

    n = ctx.size(200_000, 2_000)
    rounds = ctx.rounds_or(7)
    rows = _data.rows(n)
    leads = [Lead.from_wire(row) for row in rows]
    dict_chunks = _data.chunks(rows, BATCH)
    lead_chunks = _data.chunks(leads, BATCH)
    contenders = {
        SDK_DICTS: _timed(_sdk_pack, dict_chunks),
        SDK_LEADS: _timed(_sdk_pack, lead_chunks),
        SDK_CHECK: _timed(_sdk_check, dict_chunks),
        SDK_BODY: _timed(_sdk_body, dict_chunks),
        FLOOR: _timed(_one_pass, dict_chunks),
        MSGSPEC: _timed(_msgspec, dict_chunks),
        ORJSON: _timed(_orjson, dict_chunks),
        STDLIB: _timed(_stdlib, dict_chunks),
    }
    results = alternate(contenders, rounds)
    rate = {name: median([n / s for s, _ in runs]) for name, runs in results.items()}
    size = {name: runs[0][1] for name, runs in results.items()}
    mbps = {name: median([b / s / 1e6 for s, b in runs]) for name, runs in results.items()}

    table = Table(
        f"{n:,} leads in bodies of {BATCH:,}, median of {rounds} rounds",
        ["contender", "leads/s", "MB/s", "bytes/lead", "vs msgspec", "vs json", "spread"],
    )
    for name, runs in results.items():
        per_lead = f"{size[name] / n:.1f}" if size[name] else "-"
        table.add(
            name,
            f"{rate[name]:,.0f}",
            f"{mbps[name]:,.1f}" if size[name] else "-",
            per_lead,
            f"{ratio(rate[name], rate[MSGSPEC]):.2f}x",
            f"{ratio(rate[name], rate[STDLIB]):.2f}x",
            f"{spread([n / s for s, _ in runs]):.0%}",
        )
    check_us = 1e6 * BATCH / rate[SDK_CHECK]
    body_us = 1e6 * BATCH / rate[SDK_BODY]
    msgspec_us = 1e6 * BATCH / rate[MSGSPEC]
    floor_us = 1e6 * BATCH / rate[FLOOR]
    values = sum(len(row) for row in rows) / n
    budget = f"per 1,000 leads: leads_are_valid {check_us:.0f} us + encode {body_us:.0f} us"
    targets = [
        Target(
            "SDK (validate + encode, dicts) / msgspec",
            ratio(rate[SDK_DICTS], rate[MSGSPEC]),
            0.5,
            note=f"{budget}; one Python pass over the values alone: {floor_us:.0f} us",
        ),
        Target(
            "#23 SDK (validate + encode, Lead objects) / the same of dicts",
            ratio(rate[SDK_LEADS], rate[SDK_DICTS]),
            1.0,
            note="read into columns in C, then one WireLead struct built a lead, "
            "which dicts given ready-made do not pay",
        ),
        Target(
            "SDK (validate + encode, dicts) / stdlib json",
            ratio(rate[SDK_DICTS], rate[STDLIB]),
            3.0,
            note=f"{budget}; 3x json allows {1e6 * BATCH / (3 * rate[STDLIB]):.0f} us in all",
        ),
    ]
    notes = [
        f"per 1,000 leads: leads_are_valid {check_us:.0f} us, BodyTemplate.body {body_us:.0f} us; "
        f"the Lead path (proven_rows: column checks, a WireLead a lead) runs at "
        f"{ratio(rate[SDK_LEADS], rate[MSGSPEC]):.2f}x msgspec (no target).",
        f"per value ({values:.0f} values a lead): msgspec's whole encode "
        f"{1e3 * msgspec_us / (BATCH * values):.0f} ns, one str.join pass "
        f"{1e3 * floor_us / (BATCH * values):.0f} ns; validate + encode reaches 0.5x msgspec "
        f"only if validation costs at most {msgspec_us:.0f} us per 1,000 leads: one Python "
        f"pass costs {floor_us:.0f} us, the compiled check {check_us:.0f} us.",
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table],
        targets=targets,
        notes=notes,
        data={
            "leads": n,
            "batch_size": BATCH,
            "rounds": rounds,
            "leads_per_second": rate,
            "mb_per_second": mbps,
            "bytes": size,
            "us_per_1000": {
                "leads_are_valid": check_us,
                "body": body_us,
                "msgspec": msgspec_us,
                "one_pass": floor_us,
            },
            "values_per_lead": values,
        },
    )
