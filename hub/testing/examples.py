"""One realistic incident as raw event dicts, shared by tests across the hub.

A 68-year-old man in Tianjin calls 120 at 08:00 with chest pain; the crew records a STEMI
ECG, transmits it, gives loading doses and takes him to a chest-pain center that was
pre-notified. Every event type appears. The incident.cancelled event is last (a duplicate
record merged away after the fact) so `example_events(include_cancellation=False)`, or
`example_events()[:-1]`, is the same incident completed normally.

Each call returns fresh dicts: mutate them freely to build invalid variants.
"""

from typing import Any

__all__ = [
    "EXAMPLE_HOSPITAL_CODE",
    "EXAMPLE_INCIDENT_ID",
    "EXAMPLE_PATIENT_ID",
    "EXAMPLE_RESIDENT_ID",
    "EXAMPLE_SOURCE",
    "EXAMPLE_UNIT_ID",
    "example_events",
]

EXAMPLE_INCIDENT_ID = "INC-20261125-0001"
EXAMPLE_PATIENT_ID = "PAT-20261125-0001"
EXAMPLE_UNIT_ID = "AMB-TJ-012"
EXAMPLE_HOSPITAL_CODE = "H120105001"
EXAMPLE_SOURCE = "dispatch-tianjin"
# Built with resident_id_check_char("12010519580312003"): born 1958-03-12, male (odd 17th).
EXAMPLE_RESIDENT_ID = "120105195803120039"

_DAY = "2026-11-25T"
_TZ = "+08:00"


def _at(clock: str) -> str:
    return f"{_DAY}{clock}{_TZ}"


def _event(
    number: int, event_type: str, clock: str, data: dict[str, Any], source: str = EXAMPLE_SOURCE
) -> dict[str, Any]:
    return {
        "event_id": f"EVT-20261125-0001-{number:03d}",
        "type": event_type,
        "incident_id": EXAMPLE_INCIDENT_ID,
        "occurred_at": _at(clock),
        "source": source,
        "correlation_id": "CALL-20261125-0001",
        "data": data,
    }


def _status(number: int, status: str, clock: str, **extra: Any) -> dict[str, Any]:
    data = {"unit_id": EXAMPLE_UNIT_ID, "status": status, "at": _at(clock), **extra}
    return _event(number, "unit.status", clock, data)


def example_events(*, include_cancellation: bool = True) -> list[dict[str, Any]]:
    """The STEMI incident, in order of occurrence; all 11 event types by default."""
    scene = {"lat": 39.1589, "lon": 117.1945, "crs": "gcj02"}
    events = [
        _event(
            1,
            "call.received",
            "08:00:00",
            {
                "call_id": "CALL-20261125-0001",
                "received_at": _at("08:00:00"),
                "caller_phone": "13820000001",
                "callback_phone": "022-26260001",
                "address": {
                    "text": "天津市河北区望海楼街道建国道88号3号楼2单元502室",
                    "standard_address_code": "120105001001000880030205",
                    "province": "天津市",
                    "city": "天津市",
                    "county": "河北区",
                    "township": "望海楼街道",
                    "community": "建国道社区",
                    "road": "建国道88号",
                    "building": "3号楼",
                    "room": "2单元502室",
                },
                "location": {
                    **scene,
                    "accuracy_m": 35.0,
                    "fix_source": "caller_app",
                    "fixed_at": _at("07:59:52"),
                },
                "dispatch_code": "10-D-1",
                "priority": "delta",
                "chief_complaint_text": "胸痛1小时，大汗，憋气",
                "caller_is_deaf": False,
                "text_alarm": False,
            },
        ),
        _event(
            2,
            "unit.dispatched",
            "08:01:30",
            {
                "unit_id": EXAMPLE_UNIT_ID,
                "vehicle_plate": "津A·E0120",
                "station": "河北区急救分站",
                "crew": [
                    {"staff_id": "TJ120-D031", "name": "李明", "role": "doctor"},
                    {"staff_id": "TJ120-N017", "name": "赵静", "role": "nurse"},
                    {"staff_id": "TJ120-V045", "name": "孙强", "role": "driver"},
                ],
                "dispatched_at": _at("08:01:30"),
            },
        ),
        _status(3, "en_route", "08:02:40", time_source="vehicle_terminal"),
        _status(
            4,
            "on_scene",
            "08:11:20",
            time_source="vehicle_terminal",
            position={**scene, "crs": "wgs84", "fix_source": "gnss", "lat": 39.1576},
        ),
        _status(
            5, "patient_contact", "08:12:30", time_source="wristband", recorded_by="TJ120-D031"
        ),
        _event(
            6,
            "patient.identified",
            "08:14:00",
            {
                "patient_id": EXAMPLE_PATIENT_ID,
                "temporary": False,
                "name": "王建国",
                "sex": "1",
                "birth_date": "1958-03-12",
                "resident_id": EXAMPLE_RESIDENT_ID,
                "phone": "13820000001",
                "address": {"text": "天津市河北区望海楼街道建国道88号3号楼2单元502室"},
                "special_groups": ["elderly"],
                "emergency_contacts": [
                    {"name": "王丽", "relationship": "女儿", "phone": "13920000002"}
                ],
            },
        ),
        _event(
            7,
            "assessment.updated",
            "08:15:00",
            {
                "patient_id": EXAMPLE_PATIENT_ID,
                "assessed_at": _at("08:15:00"),
                "chief_complaint": "持续性胸骨后压榨样疼痛1小时，伴大汗",
                "triage_level": "I",
                "gcs": {"eye": 4, "verbal": 5, "motor": 6},
                "pain_score": 8,
                "impression": "急性ST段抬高型心肌梗死（下壁）",
                "impression_code": "I21.1",
                "onset_at": _at("07:00:00"),
                "allergies": [
                    {
                        "substance": "青霉素",
                        "category": "medication",
                        "severity": "moderate",
                        "reaction": "皮疹",
                    }
                ],
            },
        ),
        _event(
            8,
            "ecg.acquired",
            "08:16:05",
            {
                "ecg_id": "ECG-20261125-0001",
                "patient_id": EXAMPLE_PATIENT_ID,
                "acquired_at": _at("08:15:30"),
                "device_id": "LP15-SN44120012",
                "interpretation": "II、III、aVF导联ST段抬高0.3mV，提示急性下壁心肌梗死",
                "stemi_suspected": True,
                "waveforms": [
                    {
                        "lead": lead,
                        "sample_rate_hz": 500,
                        "unit": "uV",
                        "origin": 0,
                        "factor": 4.88,
                        "data": [0, 12, 41, 205, 61, 60, 62, 65, 30, 2],
                    }
                    for lead in ("II", "III", "aVF")
                ],
                "document": {
                    "content_type": "application/pdf",
                    "url": "https://ecg.example.org/tianjin/ECG-20261125-0001.pdf",
                },
                "transmitted_at": _at("08:16:05"),
            },
            source="monitor-lp15-44120012",
        ),
        _event(
            9,
            "vitals.recorded",
            "08:17:00",
            {
                "patient_id": EXAMPLE_PATIENT_ID,
                "samples": [
                    {
                        "measured_at": _at("08:13:10"),
                        "heart_rate": 52,
                        "respiratory_rate": 22,
                        "spo2": 93,
                        "systolic_bp": 98,
                        "diastolic_bp": 62,
                        "mean_bp": 74,
                        "temperature": 36.4,
                        "glucose_mmol_l": 7.8,
                        "pulse": 52,
                        "device_id": "LP15-SN44120012",
                    },
                    {
                        "measured_at": _at("08:16:40"),
                        "heart_rate": 56,
                        "spo2": 96,
                        "systolic_bp": 104,
                        "diastolic_bp": 66,
                        "etco2": 34,
                        "device_id": "LP15-SN44120012",
                    },
                ],
            },
            source="monitor-lp15-44120012",
        ),
        _event(
            10,
            "treatment.given",
            "08:19:00",
            {
                "patient_id": EXAMPLE_PATIENT_ID,
                "given_at": _at("08:19:00"),
                "kind": "medication",
                "code": "ASA-100",
                "text": "阿司匹林肠溶片300mg嚼服",
                "dose": {"value": 300, "unit": "mg"},
                "route": "PO",
            },
        ),
        _event(
            11,
            "destination.assigned",
            "08:21:00",
            {
                "hospital_code": EXAMPLE_HOSPITAL_CODE,
                "hospital_name": "河北区示范医院",
                "department_code": "CPC",
                "department_name": "胸痛中心导管室",
                "eta": _at("08:44:00"),
                "reason": "最近的具备直接PCI能力的胸痛中心",
                "prenotify": "chest_pain",
            },
        ),
        _status(12, "left_scene", "08:24:00", time_source="vehicle_terminal"),
        _status(13, "at_destination", "08:43:30", time_source="vehicle_terminal"),
        _event(
            14,
            "handover.completed",
            "08:47:00",
            {
                "patient_id": EXAMPLE_PATIENT_ID,
                "at": _at("08:47:00"),
                "hospital_code": EXAMPLE_HOSPITAL_CODE,
                "receiving_clinician": "陈医生（导管室）",
                "notes": "绕行急诊直达导管室；已嚼服阿司匹林300mg",
            },
        ),
        _status(15, "handover", "08:47:00", time_source="hospital", recorded_by="陈医生"),
        _status(16, "back_in_service", "09:05:00", time_source="vehicle_terminal"),
    ]
    if include_cancellation:
        events.append(
            _event(
                17,
                "incident.cancelled",
                "09:10:00",
                {
                    "at": _at("09:10:00"),
                    "reason": "重复建档：与同一患者的另一呼救记录合并 (duplicate record merged)",
                },
            )
        )
    return events
