"""Decimal money helpers shared by the endpoint and vector collection cost decisions.

All arithmetic is `Decimal`; floats only enter through measured rates and are converted by their
shortest decimal representation. Rounding is half-up to the cent, the way a bill is rounded.
Pure.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

__all__ = ["CENT", "HOURS_PER_MONTH", "MAX_MONEY", "from_float", "money", "percent_saved"]

CENT: Final = Decimal("0.01")
# The month that cloud price lists use (365 x 24 / 12).
HOURS_PER_MONTH: Final = Decimal(730)
# The largest amount status may carry (tidal.api.common.MONEY_PATTERN: nine integer digits).
MAX_MONEY: Final = Decimal("999999999.99")
_SMALLEST: Final = Decimal("0.0001")


def from_float(value: float) -> Decimal:
    """`value` as the Decimal its shortest repr spells (0.1 -> Decimal('0.1'), not 0.1000...5)."""
    return Decimal(repr(value))


def money(amount: Decimal) -> str | None:
    """`amount` as status money: two decimals, or four when a non-zero amount rounds to $0.00.

    None when the amount does not fit the status field (a nonsense rate, not a real bill).
    """
    if amount < 0 or amount > MAX_MONEY:
        return None
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if rounded == 0 and amount > 0:
        rounded = amount.quantize(_SMALLEST, rounding=ROUND_HALF_UP)
    return f"{rounded:f}"


def percent_saved(actual: Decimal, baseline: Decimal) -> int | None:
    """Whole percent `actual` saves against `baseline`, within 0-100; None without a baseline."""
    if baseline <= 0:
        return None
    saved = (baseline - actual) / baseline * 100
    whole = int(saved.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return min(100, max(0, whole))
