"""HL7 v2.5.1 mappings for hospital HIS: ``hl7v2-adt`` (pre-registration) and
``hl7v2-oru`` (vital signs and ECG results). See README.md in this folder for the
trigger logic, the field choices and the ZPH segment.
"""

from mappings.hl7v2.adt import CANCEL_OF, STRUCTURES, AdtAction, decide, hl7v2_adt
from mappings.hl7v2.common import Hl7v2Options, content_type
from mappings.hl7v2.oru import hl7v2_oru

__all__ = [
    "CANCEL_OF",
    "STRUCTURES",
    "AdtAction",
    "Hl7v2Options",
    "content_type",
    "decide",
    "hl7v2_adt",
    "hl7v2_oru",
]
