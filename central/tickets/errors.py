"""Errors of ticket handling.

    TicketError                  base of everything raised by central.tickets
    ├── UnitMismatch             two weighings in different units: no net by difference
    ├── NumberingBlocked         no automatic ticket number can be given (blocked or used up this year)
    └── AlreadyCancelled         a cancelled ticket is cancelled for good: not again
"""

from __future__ import annotations


class TicketError(Exception):
    """Base of the errors of ``central.tickets``."""


class UnitMismatch(TicketError):
    def __init__(self, first_unit: str, second_unit: str) -> None:
        self.first_unit = first_unit
        self.second_unit = second_unit
        super().__init__(f"the weighings are in {first_unit} and {second_unit}: a net weight needs one unit")


class NumberingBlocked(TicketError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AlreadyCancelled(TicketError):
    def __init__(self, number: str) -> None:
        self.number = number
        super().__init__(f"ticket {number} is cancelled already")
