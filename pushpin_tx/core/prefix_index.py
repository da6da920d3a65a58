# -*- test-case-name: tests.core.test_prefix_index -*-
"""
The prefix lookup every follower of prefix subscriptions asks: which of a set of name prefixes
start a given name. The router (its prefix subscribers), the subscriptions and the pool's shared
interest (C{reaches}), the ZeroMQ SUB input, the Redis backplane (wanted and confirmed patterns)
and the source broker (an XPUB's topics) all keep one L{PrefixIndex}.

The lookup slices the name once per distinct prefix length (none longer than the name) and
asks the dict once per slice: with prefixes of three lengths a lookup costs three dict
lookups however many prefixes there are. So each index keeps, beside its prefixes, how many
prefixes have each length, and the lengths go with the last prefix of their length.

In core, not protocol: protocol holds functions and frozen values, and this is state; core is
the lowest layer every user of it may import (tests/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", str, bytes)
V = TypeVar("V")

_NONE: tuple[()] = ()


class PrefixIndex(Generic[K, V]):
    """
    Prefixes (C{str} or C{bytes}), each with a value, and the lookup of those that start a name.

    @ivar entries: prefix -> value, live. Read it freely (its truth value is the cheapest
        "any prefix at all?" test), and change the value of a prefix in it; add and remove
        prefixes only through L{add} and L{remove}, which keep the per-length counts.
    """

    __slots__ = ("entries", "_lengths")

    def __init__(self) -> None:
        self.entries: dict[K, V] = {}
        #: prefix length -> how many prefixes have it
        self._lengths: dict[int, int] = {}

    def add(self, prefix: K, value: V) -> bool:
        """
        Set C{prefix}'s value, adding it if it is new.

        @return: C{True} if C{prefix} was not in the index before.
        """
        entries = self.entries
        new = prefix not in entries
        entries[prefix] = value
        if new:
            lengths = self._lengths
            size = len(prefix)
            lengths[size] = lengths.get(size, 0) + 1
        return new

    def remove(self, prefix: K) -> bool:
        """
        Remove C{prefix} (an absent one is ignored).

        @return: C{True} if it was there.
        """
        entries = self.entries
        if prefix not in entries:
            return False
        del entries[prefix]
        lengths = self._lengths
        size = len(prefix)
        left = lengths[size] - 1
        if left:
            lengths[size] = left
        else:
            del lengths[size]
        return True

    def clear(self) -> None:
        self.entries.clear()
        self._lengths.clear()

    def get(self, prefix: K) -> V | None:
        """C{prefix}'s value (C{None} if absent)."""
        return self.entries.get(prefix)

    def __contains__(self, prefix: object) -> bool:
        """Whether C{prefix} itself is in the index (not: whether some prefix starts it)."""
        return prefix in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def keys(self) -> KeysView[K]:
        """The prefixes, live."""
        return self.entries.keys()

    def lengths(self) -> KeysView[int]:
        """The distinct prefix lengths, live (a lookup slices the name once per length)."""
        return self._lengths.keys()

    # the lookup ----------------------------------------------------------------------------

    def matches(self, name: K) -> bool:
        """Whether some prefix in the index starts C{name} (a prefix equal to it included)."""
        entries = self.entries
        size = len(name)
        for length in self._lengths:
            if length <= size and name[:length] in entries:
                return True
        return False

    def matching(self, name: K) -> Sequence[V]:
        """The values of every prefix that starts C{name}, in no promised order (C{()}: none)."""
        entries = self.entries
        size = len(name)
        found: list[V] | None = None
        for length in self._lengths:
            if length <= size and name[:length] in entries:  # (a miss, the usual case, slices once)
                if found is None:
                    found = [entries[name[:length]]]
                else:
                    found.append(entries[name[:length]])
        return _NONE if found is None else found

    def longest(self, name: K) -> K | None:
        """The longest prefix in the index that starts C{name} (C{None}: none does)."""
        entries = self.entries
        size = len(name)
        best: K | None = None
        best_size = 0
        for length in self._lengths:
            if best_size < length <= size:
                key = name[:length]
                if key in entries:
                    best, best_size = key, length
        return best
