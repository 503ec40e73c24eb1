"""``hub validate``: check FHIR JSON and HL7 v2 ER7 files against the models and our profiles.

Off the hot path by design (ARCHITECTURE.md "The hot path"): FHIR goes through the
``fhir.resources`` R4B models and :func:`mappings.fhir.profile_check.validate_fhir`;
ER7 through hl7apy's 2.5.1 structures (when hl7apy is installed) and the message
profile in ``profiles/hl7v2`` chosen by MSH-9. Every problem is reported with a path:
``PID-3: required field missing``, ``Bundle.entry[2].resource(Encounter).class: ...``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from hub.hl7v2.er7 import Message, Segment, decode, parse_message, split_messages
from hub.hl7v2.errors import Hl7Error
from mappings.fhir.profile_check import Violation, validate_fhir

__all__ = [
    "HL7V2_PROFILES_DIR",
    "Problem",
    "check_er7_profile",
    "detect_format",
    "load_hl7v2_profiles",
    "validate_bytes",
    "validate_er7",
    "validate_fhir_document",
    "validate_file",
]

HL7V2_PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles" / "hl7v2"

_MLLP_START, _MLLP_END = b"\x0b", b"\x1c\r"


# One violation: where (an ER7 or FHIRPath-like path) and what; shared with the FHIR
# profile check so both report alike.
Problem = Violation


def detect_format(data: bytes) -> Literal["fhir", "er7"] | None:
    """``fhir`` for a JSON object, ``er7`` for a message starting with MSH; None otherwise."""
    head = _strip(data)[:3]
    if head.startswith(b"{"):
        return "fhir"
    if head == b"MSH":
        return "er7"
    return None


def _strip(data: bytes) -> bytes:
    data = data.removeprefix(b"\xef\xbb\xbf").strip()
    if data.startswith(_MLLP_START):  # a framed message, e.g. copied from a capture
        data = data[1:].removesuffix(_MLLP_END).removesuffix(b"\x1c").strip()
    return data


def validate_file(path: str | os.PathLike[str]) -> tuple[str, list[Problem]]:
    """(format, problems) of one file; format is ``fhir``, ``er7`` or ``unknown``."""
    return validate_bytes(Path(path).read_bytes())


def validate_bytes(data: bytes) -> tuple[str, list[Problem]]:
    """(format, problems) of one document given as bytes."""
    kind = detect_format(data)
    if kind == "fhir":
        try:
            document = json.loads(_strip(data))
        except ValueError as exc:
            return kind, [Problem("$", f"not valid JSON: {exc}")]
        if not isinstance(document, dict):
            return kind, [Problem("$", "a FHIR resource must be a JSON object")]
        return kind, validate_fhir_document(document)
    if kind == "er7":
        # A file may hold several messages back to back (one delivery's ADT per patient):
        # each is checked on its own, its problems prefixed with its place.
        messages = split_messages(_strip(data))
        problems: list[Problem] = []
        for n, message in enumerate(messages, start=1):
            prefix = f"message[{n}]." if len(messages) > 1 else ""
            try:
                decoded = decode(message)
            except Hl7Error as exc:
                problems.append(Problem(f"{prefix}MSH-18", str(exc)))
                continue
            found = validate_er7(decoded.text, decoded.codec)
            problems.extend(Problem(prefix + p.path, p.message) for p in found)
        return kind, problems
    return "unknown", [Problem("$", "neither FHIR JSON nor an HL7 v2 ER7 message (MSH...)")]


# --------------------------------------------------------------------- FHIR


def validate_fhir_document(document: Mapping[str, Any]) -> list[Problem]:
    """R4B model validation, then the differentials of our StructureDefinitions."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    kind = document.get("resourceType")
    if not isinstance(kind, str):
        return [Problem("resourceType", "required")]
    try:
        model = get_fhir_model_class(kind)
    except KeyError:
        return [Problem("resourceType", f"unknown FHIR R4B resource type {kind!r}")]
    problems: list[Problem] = []
    try:
        model.model_validate(dict(document))
    except ValidationError as exc:
        for detail in exc.errors(include_url=False):
            problems.append(Problem(_fhir_path(document, detail["loc"]), detail["msg"]))
    problems.extend(validate_fhir(dict(document)))
    return problems


def _fhir_path(document: Mapping[str, Any], loc: Sequence[int | str]) -> str:
    """``Bundle.entry[2].resource(Encounter).class`` from a pydantic location."""
    path = str(document.get("resourceType", "$"))
    node: Any = document
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        node = node.get(part) if isinstance(node, Mapping) else None
        path += f".{part}"
        if part == "resource" and isinstance(node, Mapping) and "resourceType" in node:
            path += f"({node['resourceType']})"
    return path


# --------------------------------------------------------------------- HL7 v2


@functools.cache
def load_hl7v2_profiles(directory: Path = HL7V2_PROFILES_DIR) -> dict[str, dict[str, Any]]:
    """Our message profiles by ``code^trigger`` (``ADT^A04``), read once."""
    profiles: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        profile = json.loads(path.read_text(encoding="utf-8"))
        code, trigger, _ = str(profile["message_type"]).split("^")
        profiles[f"{code}^{trigger}"] = profile
    return profiles


def validate_er7(text: str, codec: str = "utf-8") -> list[Problem]:
    """hl7apy's 2.5.1 structure check (if installed) and our profile for MSH-9."""
    try:
        message = parse_message(text, codec)
    except Hl7Error as exc:
        return [Problem(str(exc.location) if exc.location else "MSH", str(exc))]
    problems = list(_hl7apy_problems(text))
    problems.extend(check_er7_profile(message))
    return problems


def _hl7apy_problems(text: str) -> Iterator[Problem]:
    try:
        from hl7apy.consts import VALIDATION_LEVEL  # type: ignore[import-untyped]
        from hl7apy.parser import parse_message as hl7apy_parse  # type: ignore[import-untyped]
        from hl7apy.validation import Validator  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - hl7apy is a dev/validation extra
        yield Problem("hl7apy", "not installed: the 2.5.1 structure check was skipped")
        return
    try:
        parsed = hl7apy_parse(
            text.replace("\n", "\r"), find_groups=True, validation_level=VALIDATION_LEVEL.TOLERANT
        )
    except Exception as exc:  # hl7apy raises many unrelated exception types
        yield Problem("hl7apy", f"does not parse: {exc}")
        return
    fd, report = tempfile.mkstemp(prefix="hub-validate-", suffix=".txt")
    os.close(fd)
    try:
        # The first error is raised; all of them are in the report.
        with contextlib.suppress(Exception):
            Validator.validate(parsed, report_file=report)
        lines = Path(report).read_text(encoding="utf-8").splitlines()
    finally:
        os.unlink(report)
    for line in lines:
        if line.startswith("Error: "):
            yield Problem(f"{parsed.name} (hl7apy 2.5.1)", line.removeprefix("Error: "))


def check_er7_profile(message: Message) -> list[Problem]:
    """Every violation of the profile our hub registers for the message's MSH-9."""
    header = message.header
    key = header.message_type
    profile = load_hl7v2_profiles().get(key)
    if profile is None:
        known = ", ".join(sorted(load_hl7v2_profiles()))
        return [Problem("MSH-9", f"no message profile for {key!r}; profiles: {known}")]
    problems = _check_segments(message, profile["segments"])
    for rule in profile["fields"]:
        problems.extend(_check_rule(message, rule))
    return problems


def _check_segments(message: Message, spec: list[dict[str, Any]]) -> list[Problem]:
    names = [segment.name for segment in message.segments]
    problems: list[Problem] = []
    position = _match(names, 0, spec, problems)
    if position < len(names) and not problems:
        problems.append(
            Problem(f"{names[position]}", f"segment not allowed here (segment {position + 1})")
        )
    return problems


def _match(names: list[str], at: int, spec: list[dict[str, Any]], problems: list[Problem]) -> int:
    """Greedy match of spec (segments and groups, with cardinality) from names[at]."""
    for item in spec:
        low = int(item["min"])
        high = -1 if item["max"] == "*" else int(item["max"])
        count = 0
        while high == -1 or count < high:
            if "group" in item:
                first = item["segments"][0]["segment"]
                if at >= len(names) or names[at] != first:
                    break
                at = _match(names, at, item["segments"], problems)
            else:
                if at >= len(names) or names[at] != item["segment"]:
                    break
                at += 1
            count += 1
        if count < low:
            label = item.get("group") or item["segment"]
            problems.append(
                Problem(label, f"required segment missing (at least {low}, found {count})")
            )
    return at


_RULE_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?$")


def _rule_value(segment: Segment, path: str) -> str:
    m = _RULE_PATH.match(path)
    if m is None:
        raise ValueError(f"bad profile path {path!r}")
    component = int(m[3]) if m[3] else None
    if component is None:
        return segment.raw(int(m[2]))
    return segment.get(int(m[2]), component)


def _check_rule(message: Message, rule: Mapping[str, Any]) -> Iterator[Problem]:
    path = str(rule["path"])
    name = path[:3]
    segments = message.all(name)
    for index, segment in enumerate(segments, start=1):
        label = path if len(segments) == 1 else f"{name}[{index}]{path[3:]}"
        when = rule.get("when")
        if when is not None and _rule_value(segment, when["path"]) != when["equals"]:
            continue
        value = _rule_value(segment, path)
        if not value:
            if rule.get("usage") in ("R", "C"):
                yield Problem(label, "required field missing")
            continue
        fixed = rule.get("fixed")
        if fixed is not None and value != fixed:
            yield Problem(label, f"must be {fixed!r}, found {value!r}")
        allowed = rule.get("values")
        if allowed is not None and value not in allowed:
            yield Problem(label, f"{value!r} is not one of {', '.join(allowed)}")
        pattern = rule.get("pattern")
        if pattern is not None and not re.match(pattern, value):
            yield Problem(label, f"{value!r} does not match {pattern}")
        max_length = rule.get("max_length")
        if max_length is not None and len(value) > int(max_length):
            yield Problem(label, f"longer than {max_length} characters ({len(value)})")
