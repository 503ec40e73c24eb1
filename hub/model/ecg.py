"""Prehospital 12-lead ECGs: raw waveforms, a rendered document, or both.

Transmitting the ECG before arrival is a chest-pain center metric, so the record keeps
when it was acquired and when it was sent.
"""

import base64
import binascii
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from hub.model.base import CanonicalModel, Code, Identifier, Text

__all__ = ["DocumentRef", "Ecg", "EcgLead", "EcgWaveform"]


class EcgLead(StrEnum):
    I = "I"  # noqa: E741
    II = "II"
    III = "III"
    aVR = "aVR"
    aVL = "aVL"
    aVF = "aVF"
    V1 = "V1"
    V2 = "V2"
    V3 = "V3"
    V4 = "V4"
    V5 = "V5"
    V6 = "V6"


class EcgWaveform(CanonicalModel):
    """One lead as integer samples; physical value = origin + factor * sample, in unit.

    The origin/factor/data split mirrors FHIR SampledData so mappings copy it unchanged.
    """

    lead: EcgLead
    sample_rate_hz: Annotated[float, Field(gt=0)]
    unit: Annotated[str, Field(min_length=1, max_length=32)] = "uV"  # UCUM
    origin: float = 0.0
    factor: float = 1.0
    data: Annotated[list[int], Field(min_length=1)]


class DocumentRef(CanonicalModel):
    """A rendered document (PDF, image) either by reference or inline, never both."""

    content_type: Annotated[
        str, Field(max_length=127, pattern=r"^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$")
    ]  # e.g. application/pdf
    url: Annotated[str, Field(max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")] | None = (
        None
    )
    data_base64: Annotated[str, Field(min_length=1)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None

    @field_validator("data_base64")
    @classmethod
    def _is_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error as error:
                raise PydanticCustomError(
                    "base64_invalid",
                    "data_base64 is not valid base64: {error}",
                    {"error": str(error)},
                ) from None
        return value

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        if (self.url is None) == (self.data_base64 is None):
            raise PydanticCustomError(
                "document_location", "a document needs exactly one of url or data_base64"
            )
        return self


class Ecg(CanonicalModel):
    """An ECG of one patient (data of `ecg.acquired`)."""

    ecg_id: Identifier
    patient_id: Identifier
    acquired_at: AwareDatetime  # first ECG time node
    device_id: Code | None = None
    interpretation: Text | None = None  # device or physician reading
    stemi_suspected: bool | None = None  # None: not assessed
    waveforms: list[EcgWaveform] = Field(default_factory=list)
    document: DocumentRef | None = None
    transmitted_at: AwareDatetime | None = None  # ECG transmitted time node

    @model_validator(mode="after")
    def _has_content(self) -> Self:
        if not self.waveforms and self.document is None:
            raise PydanticCustomError("ecg_empty", "an ECG needs waveforms or a document")
        leads = [waveform.lead for waveform in self.waveforms]
        duplicates = sorted({lead.value for lead in leads if leads.count(lead) > 1})
        if duplicates:
            raise PydanticCustomError(
                "ecg_duplicate_lead",
                "leads appear more than once: {leads}",
                {"leads": ", ".join(duplicates)},
            )
        return self
