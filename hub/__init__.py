from hub.compiled import check_fresh

check_fresh()
