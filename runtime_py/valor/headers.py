"""``Headers``: case-insensitive, multi-valued, and in the order they arrived."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Headers(Mapping[str, str]):
    """Read-only view of header pairs. ``headers["x"]`` is the first value; ``getlist`` all."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[Iterable[str]] | Mapping[str, str] = ()) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._pairs: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def __getitem__(self, name: str) -> str:
        lowered = name.lower()
        for key, value in self._pairs:
            if key.lower() == lowered:
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return any(key.lower() == lowered for key, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for key, _ in self._pairs:
            lowered = key.lower()
            if lowered not in seen:
                seen.add(lowered)
                yield lowered

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._pairs})

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        lowered = name.lower()
        return [value for key, value in self._pairs if key.lower() == lowered]

    def raw(self) -> list[list[str]]:
        """The pairs as the wire format carries them."""
        return [[key, value] for key, value in self._pairs]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return [(k.lower(), v) for k, v in self._pairs] == [
                (k.lower(), v) for k, v in other._pairs
            ]
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


def first_value(pairs: Iterable[Iterable[str]], name: str) -> str | None:
    """The first value of header ``name`` (given in lower case) among wire message pairs."""
    size = len(name)
    for key, value in pairs:
        if len(key) == size and key.lower() == name:  # the length first spares most lower()s
            return value
    return None
