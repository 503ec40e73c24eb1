"""Rules of the individual records that go beyond field types."""

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from hub.model import (
    VITAL_SIGN_CODES,
    BeFast,
    Call,
    DocumentRef,
    Ecg,
    Gcs,
    GeoPoint,
    Patient,
    Sex,
    SpecialGroup,
    UnitStatusChange,
    VitalSigns,
)
from hub.testing.examples import EXAMPLE_RESIDENT_ID

AT = "2026-11-25T08:15:00+08:00"


def error_types(error: ValidationError) -> list[str]:
    return [detail["type"] for detail in error.errors()]


def patient(**fields: Any) -> Patient:
    return Patient.model_validate({"patient_id": "PAT-1", **fields})


def test_a_temporary_patient_needs_no_name() -> None:
    assert patient(patient_id="TMP-1", temporary=True).sex is Sex.unknown


def test_a_permanent_patient_needs_a_name_or_an_id_card() -> None:
    assert patient(name="王建国").name == "王建国"
    assert patient(resident_id=EXAMPLE_RESIDENT_ID).resident_id == EXAMPLE_RESIDENT_ID
    with pytest.raises(ValidationError) as caught:
        patient(phone="13800000000")
    assert error_types(caught.value) == ["patient_unidentified"]


def test_a_patient_cannot_supersede_itself() -> None:
    with pytest.raises(ValidationError) as caught:
        patient(name="x", supersedes="PAT-1")
    assert error_types(caught.value) == ["patient_supersedes_itself"]


def test_birth_date_must_agree_with_the_id_card() -> None:
    assert patient(resident_id=EXAMPLE_RESIDENT_ID, birth_date="1958-03-12").birth_date
    with pytest.raises(ValidationError) as caught:
        patient(resident_id=EXAMPLE_RESIDENT_ID, birth_date="1958-03-11")
    assert error_types(caught.value) == ["birth_date_mismatch"]


def test_the_id_card_gives_birth_date_and_sex_without_filling_fields() -> None:
    record = patient(resident_id=EXAMPLE_RESIDENT_ID)
    assert record.birth_date is None
    assert record.birth_date_from_id == dt.date(1958, 3, 12)
    assert record.sex_from_id is Sex.male
    assert patient(resident_id="11010519491231002X").sex_from_id is Sex.female
    assert patient(name="x").birth_date_from_id is None


def test_sex_uses_gb_t_2261_codes() -> None:
    assert patient(name="x", sex="2").sex is Sex.female
    with pytest.raises(ValidationError):
        patient(name="x", sex="female")


def test_special_groups_dump_in_a_stable_order() -> None:
    record = patient(name="x", special_groups=["pregnant", "deaf", "deaf"])
    assert record.special_groups == {SpecialGroup.deaf, SpecialGroup.pregnant}
    assert record.model_dump(mode="json")["special_groups"] == ["deaf", "pregnant"]


def test_records_are_frozen() -> None:
    record = patient(name="x")
    with pytest.raises(ValidationError):
        record.name = "y"  # type: ignore[misc]


def test_gcs_total_and_be_fast_positive() -> None:
    assert Gcs(eye=2, verbal=3, motor=5).total == 10
    signs = dict.fromkeys(("balance", "eyes", "face", "arm", "speech"), False)
    assert not BeFast.model_validate(signs).positive
    assert BeFast.model_validate({**signs, "arm": True}).positive
    assert "total" not in Gcs(eye=4, verbal=5, motor=6).model_dump()


def test_vitals_need_a_value_and_a_sane_blood_pressure() -> None:
    assert VitalSigns.model_validate({"measured_at": AT, "spo2": 97}).spo2 == 97
    with pytest.raises(ValidationError) as caught:
        VitalSigns.model_validate({"measured_at": AT})
    assert error_types(caught.value) == ["vitals_empty"]
    with pytest.raises(ValidationError) as caught:
        VitalSigns.model_validate({"measured_at": AT, "systolic_bp": 80, "diastolic_bp": 80})
    assert error_types(caught.value) == ["blood_pressure_inverted"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 98.6), ("heart_rate", 400), ("glucose_mmol_l", 126), ("spo2", -1)],
)
def test_vitals_outside_physiology_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        VitalSigns.model_validate({"measured_at": AT, field: value})


def test_every_vital_field_has_a_loinc_code_and_unit() -> None:
    measured = set(VitalSigns.model_fields) - {"measured_at", "source", "device_id"}
    assert set(VITAL_SIGN_CODES) == measured
    loinc, unit = VITAL_SIGN_CODES["systolic_bp"]
    assert (loinc, unit) == ("8480-6", "mm[Hg]")
    sample = VitalSigns.model_validate({"measured_at": AT, "pulse": 80, "etco2": 35})
    assert sample.present_values() == {"etco2": 35.0, "pulse": 80.0}


def ecg(**fields: Any) -> Ecg:
    return Ecg.model_validate(
        {"ecg_id": "ECG-1", "patient_id": "PAT-1", "acquired_at": AT, **fields}
    )


WAVE = {"lead": "II", "sample_rate_hz": 500, "data": [1, 2, 3]}


def test_an_ecg_needs_waveforms_or_a_document() -> None:
    assert ecg(waveforms=[WAVE]).waveforms[0].unit == "uV"
    assert ecg(document={"content_type": "application/pdf", "data_base64": "JVBERi0="}).document
    with pytest.raises(ValidationError) as caught:
        ecg()
    assert error_types(caught.value) == ["ecg_empty"]
    with pytest.raises(ValidationError) as caught:
        ecg(waveforms=[WAVE, WAVE])
    assert error_types(caught.value) == ["ecg_duplicate_lead"]


def test_a_document_has_exactly_one_location() -> None:
    both = {"content_type": "application/pdf", "url": "https://x/y.pdf", "data_base64": "AA=="}
    for fields in (both, {"content_type": "application/pdf"}):
        with pytest.raises(ValidationError) as caught:
            DocumentRef.model_validate(fields)
        assert error_types(caught.value) == ["document_location"]
    with pytest.raises(ValidationError) as caught:
        DocumentRef.model_validate({"content_type": "image/png", "data_base64": "not base64!"})
    assert error_types(caught.value) == ["base64_invalid"]


@pytest.mark.parametrize("code", ["9-E-1", "10-D-1", "26-O-1", "32-B-1a", "1-A-12"])
def test_dispatch_codes(code: str) -> None:
    call = Call.model_validate({"call_id": "C1", "received_at": AT, "dispatch_code": code})
    assert call.dispatch_code == code


@pytest.mark.parametrize("code", ["9E1", "9-F-1", "123-E-1", "9-E-"])
def test_malformed_dispatch_codes(code: str) -> None:
    with pytest.raises(ValidationError):
        Call.model_validate({"call_id": "C1", "received_at": AT, "dispatch_code": code})


def test_geo_points_are_bounded_and_keep_their_datum() -> None:
    assert GeoPoint(lat=39.1, lon=117.2).crs == "wgs84"
    for lat, lon in ((91, 0), (0, 181)):
        with pytest.raises(ValidationError):
            GeoPoint(lat=lat, lon=lon)


def test_time_nodes_default_to_the_dispatch_system() -> None:
    change = UnitStatusChange.model_validate({"unit_id": "A1", "status": "on_scene", "at": AT})
    assert change.time_source == "dispatch_system"
    with pytest.raises(ValidationError):
        UnitStatusChange.model_validate(
            {"unit_id": "A1", "status": "on_scene", "at": "2026-11-25T08:15:00"}
        )
