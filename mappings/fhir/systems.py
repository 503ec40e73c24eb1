"""Identifier and code systems, profile URLs and extension URLs used by the FHIR mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.base import MappingError

__all__ = [
    "DEFAULT_IDENTIFIER_BASE",
    "EXT_ESTIMATED_AGE",
    "EXT_MODE_OF_ARRIVAL",
    "EXT_PLANNED_START",
    "ICD10",
    "LOINC",
    "MDC",
    "OID_PASSPORT_CHN",
    "OID_RESIDENT_ID",
    "OID_SEX",
    "OID_WS363",
    "PROFILE_BASE",
    "PROFILE_BUNDLE",
    "PROFILE_ENCOUNTER",
    "PROFILE_PATIENT",
    "PROFILE_VITAL_SIGNS",
    "UCUM",
    "V2_0430",
    "V3_ACT_CODE",
    "V3_ACT_PRIORITY",
    "identifier_base",
]

# Chinese health information OIDs (STANDARDS.md, "Chinese identifiers").
OID_RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"
OID_SEX = "urn:oid:2.16.156.10011.2.3.3.4"
OID_WS363 = "urn:oid:2.16.156.10011.2.2.1"
OID_PASSPORT_CHN = "http://hl7.org/fhir/sid/passport-CHN"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:oid:2.16.840.1.113883.6.24"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
V2_0430 = "http://terminology.hl7.org/CodeSystem/v2-0430"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

EXT_PLANNED_START = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate"
)
EXT_MODE_OF_ARRIVAL = "http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival"

PROFILE_BASE = "https://prehospital-hub.example/fhir/StructureDefinition/"
PROFILE_BUNDLE = PROFILE_BASE + "hub-transaction-bundle"
PROFILE_PATIENT = PROFILE_BASE + "hub-patient"
PROFILE_ENCOUNTER = PROFILE_BASE + "hub-encounter"
PROFILE_VITAL_SIGNS = PROFILE_BASE + "hub-vital-signs"
EXT_ESTIMATED_AGE = PROFILE_BASE + "estimated-age"

DEFAULT_IDENTIFIER_BASE = "https://prehospital-hub.example/id/"


def identifier_base(options: Mapping[str, Any]) -> str:
    """Base of hub-local identifier systems (``<base><kind>``), from options or the default.

    A site sets ``identifier_base`` in the route options to its own namespace (a URL or
    an ``urn:oid:`` arc ending in ``.``); the trailing separator is added when missing.
    """
    base = options.get("identifier_base", DEFAULT_IDENTIFIER_BASE)
    if not isinstance(base, str) or not base:
        raise MappingError("identifier_base must be a non-empty string", "options")
    if base.startswith("urn:oid:"):
        return base if base.endswith(".") else base + "."
    return base if base.endswith("/") else base + "/"
