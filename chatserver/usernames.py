"""Usernames: compared by RFC 8265's UsernameCaseMapped profile, refused when they mix
scripts, and keyed by their UTS #39 skeleton so a look-alike of a taken name is refused.

- ``enforce``: the name as stored and shown (PRECIS UsernameCasePreserved: width-mapped,
  NFC), or a reason it is not a valid username;
- ``key``: the form two names are equal in (UsernameCaseMapped: also lower-cased);
  ``ａｌｉｃｅ``, ``Alice`` and ``alice`` share one;
- ``skeleton``: UTS #39 §4's skeleton of the key (case-folded), so ``аlice`` (Cyrillic
  а) and ``alice`` share one; stored in a unique column;
- ``mixes_scripts``: more than one script, beyond the combinations UTS #39 §5.2 calls
  "highly restrictive" (Latin with Han and the Japanese or Korean scripts).
"""

from __future__ import annotations

import gzip
import unicodedata
from functools import cache
from pathlib import Path

import precis_i18n
from confusable_homoglyphs import categories

DATA = Path(__file__).parent / "data"
_PRESERVED = precis_i18n.get_profile("UsernameCasePreserved")
_MAPPED = precis_i18n.get_profile("UsernameCaseMapped")
# Characters that belong to every script (digits, punctuation) or inherit their neighbour's.
_NEUTRAL = {"COMMON", "INHERITED"}
_HIGHLY_RESTRICTIVE = (
    {"LATIN", "HAN", "HIRAGANA", "KATAKANA"},
    {"LATIN", "HAN", "BOPOMOFO"},
    {"LATIN", "HAN", "HANGUL"},
)


def enforce(name: str) -> tuple[str, str | None]:
    """(the stored form, None), or (name, why it is not a valid username)."""
    try:
        return _PRESERVED.enforce(name), None
    except UnicodeEncodeError as exc:
        return name, f"not a valid username (RFC 8265): {exc.reason.split('/')[-1]}"


def key(name: str) -> str | None:
    """The comparison form of ``name``; None when no username can have it."""
    try:
        return str(_MAPPED.enforce(name))
    except UnicodeEncodeError:
        return None


def skeleton(name: str) -> str:
    """UTS #39 skeleton: NFD, each character replaced by its prototype, NFD again; then
    case-folded, because names are compared without case (a prototype may be upper case:
    ``0`` maps to ``O``)."""
    table = _prototypes()
    mapped = "".join(table.get(c, c) for c in unicodedata.normalize("NFD", name))
    return unicodedata.normalize("NFD", mapped.casefold())


def mixes_scripts(name: str) -> bool:
    scripts = {categories.alias(c) for c in name} - _NEUTRAL
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _HIGHLY_RESTRICTIVE)


@cache
def _prototypes() -> dict[str, str]:
    """confusables.txt (shipped in chatserver/data): source character -> prototype."""
    raw = (DATA / "confusables.txt.gz").read_bytes()
    table = {}
    for line in gzip.decompress(raw).decode("utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2:
            continue
        source, target = ("".join(chr(int(cp, 16)) for cp in f.split()) for f in fields[:2])
        table[source] = target
    return table
