"""Priority classes of requests: named (`interactive`, `standard`, `batch`) or a number.

Higher numbers are dispatched first. The named classes sit ten apart so that numbers can
be put between them, and so that aging (one class per `aging_s` waited) moves a waiting
request up by exactly one named class at a time.
"""

from __future__ import annotations

from modelport.errors import InvalidRequestError

CLASSES: dict[str, int] = {"interactive": 20, "standard": 10, "batch": 0}
DEFAULT = CLASSES["standard"]
# What one aging period adds to a waiting request's class.
CLASS_STEP = 10
HIGHEST = 100


def parse_priority(value: object, what: str = "priority") -> int:
    """A class name or a number (0..100) as the number it stands for; anything else is a
    400 that lists what is accepted."""
    if isinstance(value, bool):
        value = None  # true/false is not a class, whatever int() says
    if isinstance(value, str):
        named = CLASSES.get(value.strip().lower())
        if named is not None:
            return named
        try:
            value = int(value.strip())
        except ValueError:
            value = None
    if isinstance(value, int) and 0 <= value <= HIGHEST:
        return value
    raise InvalidRequestError(
        f"{what} must be one of {', '.join(CLASSES)} or a number from 0 to {HIGHEST} "
        f"(higher is served first); got {value!r}", param=what, code="invalid_priority")


def priority_name(value: int) -> str:
    """How a priority is shown: its class name when it is one, else the number."""
    for name, number in CLASSES.items():
        if number == value:
            return name
    return str(value)


def granted(asked: int | None, allowed: int | None) -> int:
    """The class a request gets: what it asked for, never above what its key allows (a
    request without a key's class is held to nothing but what it asks)."""
    if asked is None:
        return DEFAULT if allowed is None else allowed
    return asked if allowed is None else min(asked, allowed)
