# Before any module of the hub loads: refuse a compiled copy older than its source.
from hub.compiled import check_fresh

check_fresh()
