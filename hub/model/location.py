"""Where things are: structured Chinese addresses and positioning fixes.

Addresses follow the police standard address hierarchy (GA/T 2000.32) so that 110, 120
and hospital systems can match the same doorplate; a fix keeps its coordinate system
because Chinese map providers use shifted datums (GCJ-02, BD-09).
"""

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from hub.model.base import CanonicalModel, Code, Name, Text

__all__ = ["Address", "CoordinateSystem", "FixSource", "GeoPoint"]


class Address(CanonicalModel):
    """A postal or scene address: free text always, structured parts when known."""

    text: Text
    standard_address_code: Code | None = None  # 标准地址编码, GA/T 2000.32
    province: Name | None = None  # 省
    city: Name | None = None  # 市
    county: Name | None = None  # 区/县
    township: Name | None = None  # 乡镇/街道
    community: Name | None = None  # 社区/村
    road: Name | None = None  # 路/街巷 and doorplate number
    building: Name | None = None  # 楼栋
    room: Name | None = None  # 单元/户室


class CoordinateSystem(StrEnum):
    """Geodetic datum of a coordinate pair; converting between them is a mapping concern."""

    wgs84 = "wgs84"  # GPS
    gcj02 = "gcj02"  # 国测局坐标, Gaode/Tencent maps
    bd09 = "bd09"  # Baidu maps
    cgcs2000 = "cgcs2000"  # 国家大地坐标系 2000, Beidou


class FixSource(StrEnum):
    """How a position was obtained, which bounds how far it can be trusted."""

    network_cell = "network_cell"  # 基站定位 from the carrier
    gnss = "gnss"  # GPS/Beidou receiver
    caller_app = "caller_app"  # location pushed by the caller's phone or mini-program
    manual = "manual"  # picked on a map by the dispatcher
    police_110 = "police_110"  # shared by the 110 police linkage
    qr_doorplate = "qr_doorplate"  # scanned 一标三实 doorplate QR code


class GeoPoint(CanonicalModel):
    """One position fix."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    crs: CoordinateSystem = CoordinateSystem.wgs84
    accuracy_m: Annotated[float, Field(ge=0)] | None = None
    fix_source: FixSource | None = None
    fixed_at: AwareDatetime | None = None
