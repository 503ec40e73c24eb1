"""The dispatch side of an incident: the 120 call, the units sent, and their time nodes.

Each time node keeps its source and recorder, because chest-pain and stroke center
accreditation accepts only times "recorded objectively".
"""

from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

from pydantic import AwareDatetime, Field

from hub.model.base import CanonicalModel, Identifier, Name, Phone, Text
from hub.model.location import Address, GeoPoint

__all__ = [
    "DISPATCH_CODE_PATTERN",
    "NEMSIS_ETIMES",
    "Call",
    "Cancellation",
    "CrewMember",
    "CrewRole",
    "DispatchPriority",
    "TimeNodeSource",
    "UnitDispatch",
    "UnitStatus",
    "UnitStatusChange",
]

DISPATCH_CODE_PATTERN = r"^\d{1,2}-[A-EO]-\d{1,2}[A-Za-z]?$"
"""MPDS-style determinant: protocol-level-subcode with an optional suffix, e.g. 9-E-1."""


class DispatchPriority(StrEnum):
    """MPDS-style determinant level, most to least urgent (omega: referral, no response)."""

    echo = "echo"
    delta = "delta"
    charlie = "charlie"
    bravo = "bravo"
    alpha = "alpha"
    omega = "omega"


class Call(CanonicalModel):
    """A 120 call as the dispatch system received it (data of `call.received`)."""

    call_id: Identifier
    received_at: AwareDatetime  # NEMSIS eTimes.01, PSAP call received
    caller_phone: Phone | None = None  # 主叫号码
    callback_phone: Phone | None = None  # 回拨号码, when it differs from the caller
    address: Address | None = None
    location: GeoPoint | None = None
    # Protocol-level-subcode, e.g. "9-E-1"; the code table itself is licensed and local.
    dispatch_code: Annotated[str, Field(pattern=DISPATCH_CODE_PATTERN)] | None = None
    priority: DispatchPriority | None = None
    chief_complaint_text: Text | None = None  # 主诉, as told by the caller
    caller_is_deaf: bool = False  # the call needs a text or video channel
    text_alarm: bool = False  # 短信/文字报警 instead of voice


class UnitStatus(StrEnum):
    """Time nodes of a unit, in their usual order (NEMSIS 3.5 eTimes in comments)."""

    dispatched = "dispatched"  # eTimes.03 unit notified by dispatch, 派车
    en_route = "en_route"  # eTimes.05 unit en route, 出车
    on_scene = "on_scene"  # eTimes.06 unit arrived on scene, 到达现场
    patient_contact = "patient_contact"  # eTimes.07 arrived at patient, first medical contact
    left_scene = "left_scene"  # eTimes.09 unit left scene, 离开现场
    at_destination = "at_destination"  # eTimes.11 patient arrived at destination, 到达医院
    handover = "handover"  # eTimes.12 destination patient transfer of care, 交接
    back_in_service = "back_in_service"  # eTimes.13 unit back in service, 返回待命


NEMSIS_ETIMES = MappingProxyType(
    {
        UnitStatus.dispatched: "eTimes.03",
        UnitStatus.en_route: "eTimes.05",
        UnitStatus.on_scene: "eTimes.06",
        UnitStatus.patient_contact: "eTimes.07",
        UnitStatus.left_scene: "eTimes.09",
        UnitStatus.at_destination: "eTimes.11",
        UnitStatus.handover: "eTimes.12",
        UnitStatus.back_in_service: "eTimes.13",
    }
)
"""NEMSIS 3.5 data element of each unit status, for mappings that report eTimes."""


class TimeNodeSource(StrEnum):
    """Who or what produced a timestamp: the evidence value of a time node."""

    dispatch_system = "dispatch_system"  # 调度系统
    vehicle_terminal = "vehicle_terminal"  # 车载终端
    monitor = "monitor"  # 监护仪/除颤仪
    wristband = "wristband"  # 腕带/RFID reader
    manual = "manual"  # 手工补录
    hospital = "hospital"  # recorded by the receiving hospital


class CrewRole(StrEnum):
    doctor = "doctor"  # 医生
    nurse = "nurse"  # 护士
    driver = "driver"  # 驾驶员
    stretcher_bearer = "stretcher_bearer"  # 担架员
    paramedic = "paramedic"


class CrewMember(CanonicalModel):
    staff_id: Identifier
    name: Name | None = None
    role: CrewRole | None = None


class UnitDispatch(CanonicalModel):
    """An ambulance assigned to the incident (data of `unit.dispatched`)."""

    unit_id: Identifier
    vehicle_plate: Name | None = None  # 车牌, e.g. 津A·12345
    station: Name | None = None  # 急救站/分站
    crew: list[CrewMember] = Field(default_factory=list)
    dispatched_at: AwareDatetime


class UnitStatusChange(CanonicalModel):
    """A unit reached a time node (data of `unit.status`)."""

    unit_id: Identifier
    status: UnitStatus
    at: AwareDatetime
    time_source: TimeNodeSource = TimeNodeSource.dispatch_system
    recorded_by: Name | None = None  # staff id or name of whoever entered or confirmed it
    position: GeoPoint | None = None


class Cancellation(CanonicalModel):
    """The incident was called off (data of `incident.cancelled`)."""

    at: AwareDatetime
    reason: Text
