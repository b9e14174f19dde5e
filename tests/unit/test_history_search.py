"""The search's text matching and snippets, on real text: Unicode case folding, where a
character may fold into several, and cuts that never hide the match."""

from __future__ import annotations

import pytest

from parley_common.errors import InvalidRequest
from parley_history.search import MAX_QUERY, SNIPPET_CHARS, Needle, hits_limit, search_query


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("strasse", "Die Straße"),
        ("STRASSE", "die straße"),
        ("straße", "STRASSE"),
        ("σας", "ΣΑΣ"),
        ("i\u0307stanbul", "İstanbul"),
        ("ﬁle", "FILE"),
    ],
)
def test_matching_folds_case_as_unicode_does(query: str, text: str) -> None:
    assert Needle(query).found_in(text)


def test_different_letters_do_not_match() -> None:
    assert not Needle("strasse").found_in("strase")
    assert not Needle("a b").found_in("a  b")


def test_a_short_text_is_its_own_snippet_on_one_line() -> None:
    assert Needle("two").snippet("one\ntwo\tthree") == "one two three"


def test_the_snippet_keeps_the_stored_spelling_where_folding_changed_the_length() -> None:
    # Each "ß" folds into two letters, so folded positions run ahead of the stored ones.
    text = "ß" * 300 + " Große Straße am Ende " + "ß" * 300
    snippet = Needle("GROSSE STRASSE").snippet(text)
    assert "Große Straße" in snippet and len(snippet) <= SNIPPET_CHARS
    assert snippet.startswith("…") and snippet.endswith("…")
    assert Needle("ende").snippet("İİİİ am Ende") == "İİİİ am Ende"


@pytest.mark.parametrize("at", [0, 1, 100, 5000, 9994])
def test_the_match_is_always_inside_the_snippet(at: int) -> None:
    text = "x" * at + "needle" + "y" * (10_000 - at - 6)
    snippet = Needle("NEEDLE").snippet(text)
    assert "needle" in snippet and len(snippet) <= SNIPPET_CHARS
    shown = snippet.removeprefix("…").removesuffix("…")
    assert shown in text and len(shown) == SNIPPET_CHARS - 2
    # An ellipsis where, and only where, the text goes on.
    assert snippet.startswith("…") == (not text.startswith(shown))
    assert snippet.endswith("…") == (not text.endswith(shown))
    # A third of the context before the match (all of it, when the text ends soon after).
    room = SNIPPET_CHARS - 2
    assert shown.index("needle") == max(min(at, (room - 6) // 3), room - (len(text) - at))


def test_a_match_longer_than_the_snippet_shows_its_start() -> None:
    query = "z" * 200
    snippet = Needle(query).snippet("before " + query + " after")
    assert snippet == "…" + "z" * (SNIPPET_CHARS - 2) + "…"


def test_the_query_is_trimmed_and_bounded() -> None:
    assert search_query("  tax\n") == "tax"
    assert search_query("q" * MAX_QUERY) == "q" * MAX_QUERY
    for bad in ("", " \t\n", "q" * (MAX_QUERY + 1)):
        with pytest.raises(InvalidRequest):
            search_query(bad)


def test_the_limit_defaults_to_20_and_stops_at_50() -> None:
    assert [hits_limit(n) for n in (0, 1, 20, 50, 51, 10_000)] == [20, 1, 20, 50, 50, 50]
