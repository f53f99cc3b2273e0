"""The run arguments every sync takes: its mode and its batch size, checked one way."""

from __future__ import annotations

from typing import Literal, get_args

# incremental: what changed since the watermark (a sync without one runs in full); full: every record.
Mode = Literal["incremental", "full"]
MODES: tuple[Mode, ...] = get_args(Mode)


def check_run_arguments(mode: str, batch_size: int) -> None:
    """Raise ValueError for a mode that is not a Mode, or a batch of fewer than one record."""
    if mode not in MODES:
        raise ValueError(f"mode must be {' or '.join(map(repr, MODES))}, not {mode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
