"""Validation failures reported per field, in a form an API can return as is."""

from dataclasses import dataclass

__all__ = ["EventValidationError", "FieldError"]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One defect of a submitted body.

    path: where, e.g. "events[2].data.resident_id" in a batch or "data.samples[0].spo2" in a
    single event; "" is the body itself. reason: a sentence for a human. error_type: a stable
    machine code (pydantic's error type or one of the hub's, e.g. resident_id_check_digit).
    """

    path: str
    reason: str
    error_type: str


class EventValidationError(Exception):
    """A body that does not hold valid events; `errors` lists every defect found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        shown = "; ".join(f"{error.path or '<body>'}: {error.reason}" for error in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid field(s): {shown}{more}")
