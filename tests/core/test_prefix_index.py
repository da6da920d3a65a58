"""
L{pushpin_tx.core.prefix_index.PrefixIndex}: the prefix lookup the router, the subscriptions,
the pool's shared interest, the SUB input, the Redis backplane and the source broker share.
"""

from __future__ import annotations

from pushpin_tx.core.prefix_index import PrefixIndex


class CountingName(str):
    """A channel name that counts how often it is sliced (each slice is one dict lookup)."""

    slices = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def,override]
        if isinstance(key, slice):
            CountingName.slices += 1
        return str.__getitem__(self, key)


def _index(*prefixes: str) -> PrefixIndex[str, str]:
    index: PrefixIndex[str, str] = PrefixIndex()
    for prefix in prefixes:
        index.add(prefix, prefix.upper())
    return index


def test_matches_a_prefix_and_the_name_itself() -> None:
    """A name matches when some prefix starts it, a prefix equal to the whole name included."""
    index = _index("news.", "sport")
    assert index.matches("news.world")
    assert index.matches("news.")
    assert index.matches("sport")
    assert not index.matches("news")
    assert not index.matches("newsletter")
    assert not index.matches("")
    assert not PrefixIndex().matches("news.world")


def test_bytes_prefixes() -> None:
    """Byte topics (the broker's XPUB interest) work as text ones."""
    index: PrefixIndex[bytes, None] = PrefixIndex()
    index.add(b"news.", None)
    assert index.matches(b"news.world") and not index.matches(b"news")
    assert index.longest(b"news.world") == b"news."


def test_matching_and_longest() -> None:
    """matching gives the value of every prefix that starts the name; longest the longest prefix."""
    index = _index("n", "news.", "news.w", "sport.")
    assert sorted(index.matching("news.world")) == ["N", "NEWS.", "NEWS.W"]
    assert index.matching("weather") == ()
    assert index.longest("news.world") == "news.w"
    assert index.longest("news.sport") == "news."
    assert index.longest("nope") == "n"
    assert index.longest("weather") is None


def test_one_lookup_per_distinct_length() -> None:
    """
    A lookup slices the name (one dict lookup each) once per distinct prefix length, however
    many prefixes share a length, and never for a length longer than the name.
    """
    index = _index(*(f"p{i:03d}." for i in range(200)), "ab", "abc", "news.sport.")  # lengths 5, 2, 3, 11
    assert sorted(index.lengths()) == [2, 3, 5, 11]
    for lookup in (index.matches, index.matching, index.longest):
        CountingName.slices = 0
        lookup(CountingName("zzzzzzzz"))  # 8 characters: lengths 2, 3, 5 sliced, 11 not
        assert CountingName.slices == 3, lookup
    CountingName.slices = 0
    assert index.matches(CountingName("x")) is False
    assert CountingName.slices == 0


def test_add_and_remove_count_each_prefix_once() -> None:
    """
    Adding a prefix twice counts its length once (the second add sets the value); removing an
    absent prefix changes nothing; a length goes with the last prefix of that length.
    """
    index: PrefixIndex[str, int] = PrefixIndex()
    assert index.add("news.", 1) is True
    assert index.add("news.", 2) is False
    assert index.get("news.") == 2 and len(index) == 1 and "news." in index
    assert index.add("sport", 1) is True  # also length 5
    assert list(index.lengths()) == [5]
    assert index.remove("news.") is True
    assert index.remove("news.") is False
    assert index.remove("weather") is False
    assert list(index.lengths()) == [5] and index.matches("sport.x") and not index.matches("news.x")
    assert index.remove("sport") is True
    assert list(index.lengths()) == [] and not index and not index.entries
    assert not index.matches("sport.x")


def test_clear() -> None:
    """clear forgets the prefixes and their lengths."""
    index = _index("news.", "ab")
    index.clear()
    assert not index and list(index.lengths()) == [] and not index.matches("news.x")
    assert index.add("news.", "again") is True and list(index.lengths()) == [5]


def test_entries_and_iteration() -> None:
    """entries is the live prefix -> value dict; iteration and keys give the prefixes."""
    index = _index("news.", "ab")
    assert index.entries == {"news.": "NEWS.", "ab": "AB"}
    assert list(index) == ["news.", "ab"] and index.keys() == {"news.", "ab"}
    index.entries["ab"] = "changed"  # a value may change in place
    assert index.matching("abc") == ["changed"]
