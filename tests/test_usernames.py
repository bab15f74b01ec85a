"""usernames.py: RFC 8265 forms, UTS #39 skeletons and the mixed-script rule."""

from __future__ import annotations

import pytest

from chatserver import usernames

FULL_WIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"  # ａｌｉｃｅ
CYRILLIC_ALICE = "\u0430lice"  # Cyrillic а, then Latin


def test_full_width_and_case_share_the_key_of_the_plain_name() -> None:
    assert usernames.key(FULL_WIDTH_ALICE) == usernames.key("ALICE") == "alice"
    assert usernames.enforce(FULL_WIDTH_ALICE) == ("alice", None)
    assert usernames.enforce("Alice") == ("Alice", None)  # the shown name keeps its case


def test_a_cyrillic_look_alike_has_another_key_but_the_same_skeleton() -> None:
    key = usernames.key(CYRILLIC_ALICE)
    assert key is not None
    assert key != "alice"
    assert usernames.skeleton(key) == usernames.skeleton("alice")


@pytest.mark.parametrize(("a", "b"), [("paypal1", "paypall"), ("rn-bot", "m-bot"), ("o0", "oo")])
def test_confusable_latin_names_share_a_skeleton(a: str, b: str) -> None:
    assert usernames.skeleton(a) == usernames.skeleton(b)


def test_distinct_names_keep_distinct_skeletons() -> None:
    names = ["alice", "alicia", "bob", "user12", "user21", "борис", "東京"]
    assert len({usernames.skeleton(n) for n in names}) == len(names)


@pytest.mark.parametrize(
    ("name", "mixed"),
    [
        (CYRILLIC_ALICE, True),
        ("b\u03bfb", True),  # Greek ο
        ("alice_1.2-3", False),  # digits and punctuation belong to every script
        ("борис", False),
        ("東京ひらがなカタカナ", False),  # Han with the Japanese scripts
        ("tokyo東京", False),  # Latin with Han: "highly restrictive" allows it
        ("서울seoul", False),
        ("борис東京", True),
    ],
)
def test_mixed_scripts(name: str, mixed: bool) -> None:
    assert usernames.mixes_scripts(name) is mixed


@pytest.mark.parametrize("name", ["a b", "tab\there", "", "\u2163"])  # space, tab, empty, Ⅳ
def test_names_outside_the_profile_are_refused(name: str) -> None:
    _, why = usernames.enforce(name)
    assert why is not None
    assert usernames.key(name) is None
