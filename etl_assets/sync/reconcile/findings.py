"""What every measurement returns: how many records fail, the ids of the first SAMPLE_SIZE of them, and the
counts the verdict rests on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SAMPLE_SIZE = 20


@dataclass
class Sample:
    """How many records share a fault, and the ids of the first SAMPLE_SIZE of them."""

    count: int = 0
    ids: list[str] = field(default_factory=list)

    def add(self, ids: Sequence[str]) -> None:
        self.count += len(ids)
        self.ids.extend(ids[: SAMPLE_SIZE - len(self.ids)])


def first_ids(*samples: Sample) -> list[str]:
    return [record_id for sample in samples for record_id in sample.ids][:SAMPLE_SIZE]


class Finding:
    """A check's measurement: the failing records and the counts behind the verdict."""

    @property
    def failing(self) -> int:
        raise NotImplementedError

    @property
    def sample_ids(self) -> list[str]:
        raise NotImplementedError

    @property
    def passed(self) -> bool:
        return self.failing == 0

    def details(self) -> dict[str, Any]:
        """Further counts and samples, as plain values (numbers, text, lists, dicts, datetimes)."""
        return {}
