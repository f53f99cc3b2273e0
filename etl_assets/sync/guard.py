"""The mass-deactivation guard: how many active rows a full product sync may deactivate at once.

A source that reads empty (a wrong database name, a renamed collection) or that drifted would otherwise
take the whole catalog out of every cart. The limit is a share of the active rows with an absolute floor,
so a small catalog can still lose a few products; a run that really means more says so explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MAX_SHARE = 0.05
DEFAULT_FLOOR = 10


@dataclass(frozen=True)
class DeactivationGuard:
    max_share: float = DEFAULT_MAX_SHARE  # of the active rows
    floor: int = DEFAULT_FLOOR  # rows that may always go, whatever the share
    allow_mass_deactivation: bool = False  # one run's explicit override

    def __post_init__(self) -> None:
        if not 0 <= self.max_share <= 1:
            raise ValueError(f"max_share must be between 0 and 1, not {self.max_share!r}")
        if self.floor < 0:
            raise ValueError(f"floor must not be negative, not {self.floor!r}")

    def limit(self, active: int) -> int:
        """The most rows of `active` that may go at once."""
        return max(self.floor, math.floor(self.max_share * active))

    def refuses(self, *, deactivating: int, active: int, read: int) -> bool:
        """Whether deactivating `deactivating` of `active` rows, after reading `read` source documents,
        needs the override: more than the limit, or any at all from a source that read empty."""
        if self.allow_mass_deactivation or deactivating == 0:
            return False
        return read == 0 or deactivating > self.limit(active)


DEFAULT_GUARD = DeactivationGuard()


class MassDeactivationRefused(RuntimeError):
    """A full sync stopped before deactivating more rows than its guard allows. Nothing was deactivated."""

    def __init__(self, guard: DeactivationGuard, *, source: str, deactivating: int, active: int, read: int):
        self.deactivating, self.active, self.read = deactivating, active, read
        self.limit = guard.limit(active)
        share = deactivating / active if active else 1.0
        limit = f"{self.limit}: {guard.max_share:.0%} of the active rows, at least {guard.floor}"
        if read == 0:
            why = (f"it read 0 documents from {source}, and a sync that read nothing may deactivate nothing "
                   f"(the limit is otherwise {limit})")
        else:
            why = f"more than the limit of {limit}; it read {read} documents from {source}"
        super().__init__(
            f"product sync refused to deactivate {deactivating} of {active} active products ({share:.1%}): {why}. "
            "Nothing was deactivated; the watermark and the quarantine are unchanged."
        )
