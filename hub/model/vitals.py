"""Vital-sign samples, bounded to what a living (or just-dead) body can show.

The bounds reject unit mix-ups (Fahrenheit temperatures, glucose in mg/dL, kPa pressures)
at the edge; clinical plausibility beyond that is the clinician's call.
"""

from types import MappingProxyType
from typing import Annotated, NamedTuple, Self

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from hub.model.base import CanonicalModel, Code, Identifier
from hub.model.incident import TimeNodeSource

__all__ = [
    "BLOOD_PRESSURE_PANEL_LOINC",
    "SPO2_PULSE_OXIMETRY_LOINC",
    "VITAL_SIGNS_PANEL_LOINC",
    "VITAL_SIGN_CODES",
    "WS363_VITAL_CODES",
    "VitalCoding",
    "VitalSigns",
    "VitalsRecorded",
]


class VitalCoding(NamedTuple):
    """How one vital-sign field is coded on the wire."""

    loinc: str
    ucum: str


VITAL_SIGN_CODES = MappingProxyType(
    {
        "heart_rate": VitalCoding("8867-4", "/min"),
        "respiratory_rate": VitalCoding("9279-1", "/min"),
        # FHIR's oxygen-saturation profile requires 2708-6; add SPO2_PULSE_OXIMETRY_LOINC.
        "spo2": VitalCoding("2708-6", "%"),
        "systolic_bp": VitalCoding("8480-6", "mm[Hg]"),
        "diastolic_bp": VitalCoding("8462-4", "mm[Hg]"),
        "mean_bp": VitalCoding("8478-0", "mm[Hg]"),
        "temperature": VitalCoding("8310-5", "Cel"),
        # Prehospital glucose is a finger-stick glucometer reading in mmol/L: "Glucose
        # [Moles/volume] in Capillary blood by Glucometer". 15074-8 (in Blood) would be the
        # choice for a venous sample.
        "glucose_mmol_l": VitalCoding("14743-9", "mmol/L"),
        "etco2": VitalCoding("19889-5", "mm[Hg]"),
        # 脉搏 counted at the radial artery: "Heart rate Peripheral artery by Palpation".
        "pulse": VitalCoding("8893-0", "/min"),
    }
)
"""Vital-sign field name of `VitalSigns` -> (LOINC code, UCUM unit)."""

VITAL_SIGNS_PANEL_LOINC = "85353-1"
BLOOD_PRESSURE_PANEL_LOINC = "85354-9"
SPO2_PULSE_OXIMETRY_LOINC = "59408-5"

WS363_VITAL_CODES = MappingProxyType(
    {
        "systolic_bp": "DE04.10.174.00",
        "diastolic_bp": "DE04.10.176.00",
        "heart_rate": "DE04.10.206.00",
        "pulse": "DE04.10.118.00",
        "respiratory_rate": "DE04.10.081.00",
        "temperature": "DE04.10.186.00",
    }
)
"""Chinese data-element codes (WS 363, code system 2.16.156.10011.2.2.1) where one exists."""


class VitalSigns(CanonicalModel):
    """One sample of vital signs taken at one moment; at least one value is present."""

    measured_at: AwareDatetime
    heart_rate: Annotated[float, Field(ge=0, le=350)] | None = None  # /min
    respiratory_rate: Annotated[float, Field(ge=0, le=120)] | None = None  # /min
    spo2: Annotated[float, Field(ge=0, le=100)] | None = None  # %
    systolic_bp: Annotated[float, Field(ge=0, le=350)] | None = None  # mm[Hg]
    diastolic_bp: Annotated[float, Field(ge=0, le=300)] | None = None  # mm[Hg]
    mean_bp: Annotated[float, Field(ge=0, le=350)] | None = None  # mm[Hg]
    temperature: Annotated[float, Field(ge=25, le=45)] | None = None  # Cel
    glucose_mmol_l: Annotated[float, Field(ge=0, le=60)] | None = None  # mmol/L
    etco2: Annotated[float, Field(ge=0, le=150)] | None = None  # mm[Hg]
    pulse: Annotated[float, Field(ge=0, le=350)] | None = None  # /min
    source: TimeNodeSource = TimeNodeSource.monitor
    device_id: Code | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if all(getattr(self, name) is None for name in VITAL_SIGN_CODES):
            raise PydanticCustomError("vitals_empty", "a vital-signs sample needs a value")
        if (
            self.systolic_bp is not None
            and self.diastolic_bp is not None
            and self.diastolic_bp >= self.systolic_bp
        ):
            raise PydanticCustomError(
                "blood_pressure_inverted",
                "diastolic_bp {diastolic} must be lower than systolic_bp {systolic}",
                {"diastolic": self.diastolic_bp, "systolic": self.systolic_bp},
            )
        return self

    def present_values(self) -> dict[str, float]:
        """The vital-sign values present in this sample, keyed like VITAL_SIGN_CODES."""
        return {
            name: value for name in VITAL_SIGN_CODES if (value := getattr(self, name)) is not None
        }


class VitalsRecorded(CanonicalModel):
    """Samples for one patient (data of `vitals.recorded`), e.g. a monitor upload."""

    patient_id: Identifier
    samples: Annotated[list[VitalSigns], Field(min_length=1)]
