"""Who the patient is, as far as the crew knows.

An unconscious or unidentified patient first gets a temporary identity ("TMP-...") so care
records can start at once; a later `patient.identified` with `supersedes` replaces it.
"""

import datetime as dt
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, field_serializer, model_validator
from pydantic_core import PydanticCustomError

from hub.model.base import CanonicalModel, Identifier, Name, Phone
from hub.model.identifiers import ResidentIdCard, birth_date_from_resident_id
from hub.model.location import Address

__all__ = [
    "AgeUnit",
    "Contact",
    "EstimatedAge",
    "PassportNumber",
    "Patient",
    "Sex",
    "SpecialGroup",
]


class Sex(StrEnum):
    """Administrative sex, GB/T 2261.1 codes (code system 2.16.156.10011.2.3.3.4)."""

    unknown = "0"  # 未知的性别
    male = "1"  # 男性
    female = "2"  # 女性
    unspecified = "9"  # 未说明的性别


class AgeUnit(StrEnum):
    year = "year"
    month = "month"
    day = "day"


class EstimatedAge(CanonicalModel):
    """An age estimated on scene when the birth date is unknown (估计年龄)."""

    value: Annotated[int, Field(ge=0, le=150)]
    unit: AgeUnit = AgeUnit.year


class SpecialGroup(StrEnum):
    """Special-group flags (特殊人群) that change how the crew and hospital communicate."""

    elderly = "elderly"  # 老年人
    deaf = "deaf"  # 聋人
    mute = "mute"  # 哑人
    disabled = "disabled"  # 残疾人
    pregnant = "pregnant"  # 孕产妇
    child = "child"  # 儿童


class Contact(CanonicalModel):
    """An emergency contact (紧急联系人)."""

    name: Name | None = None
    relationship: Name | None = None  # GB/T 4761 family relationship, 2.16.156.10011.2.3.3.8
    phone: Phone


PassportNumber = Annotated[str, Field(min_length=5, max_length=20, pattern=r"^[A-Za-z0-9]+$")]
"""A passport number (Chinese passports: E/G + 8 digits; foreign ones vary)."""


class Patient(CanonicalModel):
    """A patient identity (data of `patient.identified`)."""

    patient_id: Identifier  # hub-local id
    temporary: bool = False
    supersedes: Identifier | None = None  # the temporary patient_id this one replaces
    name: Name | None = None
    sex: Sex = Sex.unknown
    birth_date: dt.date | None = None
    estimated_age: EstimatedAge | None = None
    resident_id: ResidentIdCard | None = None
    passport_no: PassportNumber | None = None
    phone: Phone | None = None
    address: Address | None = None
    special_groups: frozenset[SpecialGroup] = frozenset()
    emergency_contacts: list[Contact] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.supersedes is not None and self.supersedes == self.patient_id:
            raise PydanticCustomError(
                "patient_supersedes_itself", "supersedes must name another (temporary) patient_id"
            )
        if not self.temporary and self.name is None and self.resident_id is None:
            raise PydanticCustomError(
                "patient_unidentified", "a non-temporary patient needs a name or a resident_id"
            )
        from_id = self.birth_date_from_id
        if from_id is not None and self.birth_date is not None and from_id != self.birth_date:
            raise PydanticCustomError(
                "birth_date_mismatch",
                "birth_date {birth_date} disagrees with the resident_id birth date {from_id}",
                {"birth_date": self.birth_date.isoformat(), "from_id": from_id.isoformat()},
            )
        return self

    @field_serializer("special_groups", when_used="json")
    def _sorted_groups(self, groups: frozenset[SpecialGroup]) -> list[str]:
        """Serialise the set in a stable order so equal patients give equal JSON."""
        return sorted(group.value for group in groups)

    @property
    def birth_date_from_id(self) -> dt.date | None:
        """Birth date embedded in the resident ID card number, when there is one."""
        if self.resident_id is None:
            return None
        return birth_date_from_resident_id(self.resident_id)

    @property
    def sex_from_id(self) -> Sex | None:
        """Sex encoded by the resident ID card number (17th digit odd: male, even: female)."""
        if self.resident_id is None:
            return None
        return Sex.male if int(self.resident_id[16]) % 2 else Sex.female
