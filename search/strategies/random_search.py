"""Random search: every decision uniform and independent (the paper's baseline, Sec. 4.4)."""

from __future__ import annotations

from typing import Any

from .base import Strategy

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    name = "random"

    def _propose(self) -> tuple[list[int], dict[str, Any]]:
        return self.space.sample(self.rng), {}
