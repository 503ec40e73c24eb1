"""Mappings per second, one core, in this process: ``python -m benchmarks.mappings``.

Each mapping runs on an event of the STEMI example incident (hub.testing.examples) with
a realistic :class:`MappingContext`: the incident's earlier events in
``incident_events``, as the worker loads them for a mapping with ``needs_incident``.
The inbound converter (HL7 v2 ORU^R01 / ADT^A04 bytes → canonical event dicts, the
listener's per-message work before the store) is measured too, with and without the
pydantic validation the ingestor applies.

Most cases map the same event again and again, as a retry does, so the incident memo
(mappings/incident.py) answers from its last fold, and the FHIR validation ("validate
again") from the resources it found valid before; the "next event of an N-event
incident" cases map a new event each call, as a live monitor stream does: the figures
to quote for a first delivery.

Each case runs for about ``--seconds`` (default 1) after a short warm-up; the table
shows the rate, the mean and the p99 of single calls. JSON goes to
``benchmarks/results/mappings.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import write_report
from hub.hl7v2.er7 import decode, parse_message
from hub.model.events import parse_events
from hub.registry import load_builtin, lookup
from hub.testing.examples import EXAMPLE_HOSPITAL_CODE, example_events
from mappings.base import MappingContext
from mappings.hl7v2.inbound import InboundOptions, convert

HERE = Path(__file__).resolve().parent

Case = tuple[str, Callable[[], object]]


def _context(events: list[dict[str, Any]], index: int, **options: Any) -> MappingContext:
    return MappingContext(
        message_id="BENCH0000000000000001",
        created_at=datetime(2026, 11, 25, 0, 20, tzinfo=UTC),
        destination="his",
        options=options,
        # As the worker hands them: every event of the incident stored up to this one
        # (the event itself included).
        incident_events=tuple(events[: index + 1]),
    )


def _index(events: list[dict[str, Any]], event_type: str) -> int:
    return next(i for i, e in enumerate(events) if e["type"] == event_type)


def _mapping(name: str) -> Callable[[Mapping[str, Any], MappingContext], Any]:
    function: Callable[[Mapping[str, Any], MappingContext], Any] = lookup("mapping", name)
    return function


def cases() -> list[Case]:
    load_builtin()
    events = example_events(include_cancellation=False)
    vitals = _index(events, "vitals.recorded")
    ecg = _index(events, "ecg.acquired")
    registered = _index(events, "destination.assigned")  # the A04 goes out here
    # An assessment updated after the registration: an A08.
    update = dict(events[_index(events, "assessment.updated")])
    update["event_id"] = "EVT-20261125-0001-900"
    update["occurred_at"] = events[registered]["occurred_at"]
    events.insert(registered + 1, update)
    updated = registered + 1
    canonical = _mapping("canonical-json")
    fhir = _mapping("fhir-r4-transaction")
    adt = _mapping("hl7v2-adt")
    oru = _mapping("hl7v2-oru")

    def run(
        function: Callable[[Mapping[str, Any], MappingContext], Any],
        index: int,
        **options: Any,
    ) -> Callable[[], object]:
        event, ctx = events[index], _context(events, index, **options)
        return lambda: function(event, ctx)

    # What a monitor sends: the ORU the hub itself writes for the STEMI vitals, and an
    # ADT^A04 for the patient, read back by the inbound converter.
    oru_bytes = oru(events[vitals], _context(events, vitals)).body
    adt_bytes = adt(events[registered], _context(events, registered, trigger="A04")).body
    options = InboundOptions(peer="monitor")

    def inbound(raw: bytes, validate: bool) -> Callable[[], object]:
        def one() -> object:
            decoded = decode(raw, "UNICODE UTF-8")
            conversion = convert(parse_message(decoded.text, decoded.codec), options)
            if validate:
                return parse_events(orjson.dumps(conversion.events))
            return conversion

        return one

    def growing(
        history: int,
        mapping: Callable[[Mapping[str, Any], MappingContext], Any] = oru,
    ) -> Callable[[], object]:
        """Each call maps the next new vitals event of one incident that already holds
        ``history`` events, as a monitor's stream does (its samples a minute later each
        time): the incident memo extends its fold by one event. Every 100 calls the
        incident starts over at ``history`` (one fold from scratch), so the figure
        includes that cost too."""
        base = events[: vitals + 1]
        stream = []
        for n in range(history + 100):
            event = orjson.loads(orjson.dumps(events[vitals]))
            event["event_id"] = f"EVT-GROW-{n:06d}"
            for sample in event["data"]["samples"]:
                taken = datetime.fromisoformat(sample["measured_at"]) + timedelta(minutes=n)
                sample["measured_at"] = taken.isoformat()
            stream.append(event)
        position = [history]

        def one() -> object:
            n = position[0]
            position[0] = n + 1 if n + 1 < len(stream) else history
            history_now = base + stream[: n + 1]
            return mapping(stream[n], _context(history_now, len(history_now) - 1))

        return one

    return [
        ("canonical-json (vitals.recorded)", run(canonical, vitals)),
        ("fhir-r4-transaction, validate again (vitals)", run(fhir, vitals)),
        ("fhir-r4-transaction, no validation (vitals)", run(fhir, vitals, validate=False)),
        ("fhir-r4-transaction, validate again (ecg)", run(fhir, ecg)),
        ("fhir-r4-transaction, validate, next event of a 100-event incident", growing(100, fhir)),
        ("hl7v2-adt A04 (destination.assigned)", run(adt, registered, trigger="A04")),
        ("hl7v2-adt A08 (assessment.updated)", run(adt, updated, trigger="A04")),
        (
            "hl7v2-adt A04, hospital_code option",
            run(adt, registered, trigger="A04", hospital_code=EXAMPLE_HOSPITAL_CODE),
        ),
        ("hl7v2-oru vitals (vitals.recorded)", run(oru, vitals)),
        ("hl7v2-oru vitals, next event of a 100-event incident", growing(100)),
        ("hl7v2-oru vitals, next event of a 1,000-event incident", growing(1000)),
        ("hl7v2-oru ECG (ecg.acquired)", run(oru, ecg)),
        ("inbound ORU^R01 → canonical (convert)", inbound(oru_bytes, False)),
        ("inbound ORU^R01 → canonical + validate", inbound(oru_bytes, True)),
        ("inbound ADT^A04 → canonical + validate", inbound(adt_bytes, True)),
    ]


def measure(function: Callable[[], object], seconds: float) -> dict[str, float]:
    for _ in range(20):
        function()
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    started = clock()
    while len(samples) < 200_000:
        t = clock()
        function()
        end = clock()
        samples.append(end - t)
        if end > deadline:
            break
    total = clock() - started
    ordered = sorted(samples)
    return {
        "calls": len(samples),
        "per_second": round(len(samples) / total, 1),
        "mean_ms": round(statistics.fmean(samples) * 1000, 4),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case")
    parser.add_argument("--out", default=str(HERE / "results" / "mappings.json"))
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for name, function in cases():
        if args.only and args.only not in name:
            continue
        results[name] = measure(function, args.seconds)
    width = max(len(n) for n in results)
    header = f"{'mapping':<{width}}  {'per s':>9}  {'mean ms':>8}  {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['per_second']:>9.0f}  {r['mean_ms']:>8.3f}  {r['p99_ms']:>8.3f}"
        )
    write_report(
        args.out,
        "mappings",
        machine={
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        },
        settings={"seconds_per_case": args.seconds, "incident": "STEMI example"},
        results=results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
