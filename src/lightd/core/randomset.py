"""A set with O(1) add, discard and uniform random choice."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["RandomSet"]

T = TypeVar("T")


class RandomSet(Generic[T]):
    __slots__ = ("_index", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._index: dict[T, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def add(self, item: T) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: T) -> None:
        position = self._index.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._index[last] = position

    def at(self, position: int) -> T:
        return self._items[position]

    def position(self, item: T) -> int:
        """Where ``item`` is now (until the next change): ``at(position(item)) == item``."""
        return self._index[item]

    def choice(self, rng: random.Random) -> T:
        # random() * n instead of randrange(n): a third of the cost, bias far below 2**-40.
        return self._items[int(rng.random() * len(self._items))]
