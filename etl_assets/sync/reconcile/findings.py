"""What every measurement returns: how many records fail, the ids of the first SAMPLE_SIZE of them, and the
counts the verdict rests on, as Finding.details() derives them from the result's fields."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

SAMPLE_SIZE = 20

# Keys of the field metadata that tell Finding.details() how to report a field.
_KEY, _IDS_KEY, _LENGTH = "details_key", "details_ids_key", "details_length"
# The field is the failing count or sample itself, or a reported property stands for it.
UNREPORTED = {_KEY: None}
# The field, a list of records, is reported as how many it holds.
LENGTH_ONLY = {_LENGTH: True}


def reported(key: str, *, ids: str | None = None) -> dict[str, str | None]:
    """Field metadata: report the field under `key`, and a Sample's ids under `ids` (not at all when None,
    as when they are the finding's sample_ids)."""
    return {_KEY: key, _IDS_KEY: ids}


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
    """A check's measurement, a dataclass: the failing records and the counts behind the verdict."""

    # Properties that details() reports after the fields.
    reported_properties: ClassVar[tuple[str, ...]] = ()

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
        """Further counts and samples, as plain values (numbers, text, lists, dicts, datetimes): each field
        under its name (a Sample as its count, and its ids under the name + "_ids"; a nested Finding as its
        own details) unless its metadata says otherwise, then `reported_properties`."""
        details: dict[str, Any] = {}
        for item in fields(self):
            key = item.metadata.get(_KEY, item.name)
            if key is None:
                continue
            value = getattr(self, item.name)
            if isinstance(value, Finding):
                details.update(value.details())
            elif isinstance(value, Sample):
                details[key] = value.count
                if ids_key := item.metadata.get(_IDS_KEY, f"{item.name}_ids"):
                    details[ids_key] = value.ids
            elif item.metadata.get(_LENGTH):
                details[key] = len(value)
            else:
                details[key] = dict(value) if isinstance(value, Counter) else value
        return details | {name: getattr(self, name) for name in self.reported_properties}
