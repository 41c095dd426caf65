"""Agent-written text made safe to show a person: nothing in it can steer the terminal.

A value an agent wrote (a row's column, a session label, an operation id) reaches a
reviewer's terminal, and later a review page. Left as it is, ``ESC [ 1 A`` moves the cursor
up and overwrites the line above, ``CR`` rewrites the start of a line, ``OSC 8`` turns text
into a hidden hyperlink and a right-to-left override reverses what follows, so the reviewer
reads something other than what would be committed. :func:`inert` shows every such
character as a visible escape instead, the way Python writes it in a string literal.

This module knows nothing about terminals or HTML: it only decides which characters are
shown as escapes, so the command line and the review page show the same text (a page
still escapes ``<`` and ``&`` as HTML requires, after this).
"""

from __future__ import annotations

import re

__all__ = ["inert"]

# Characters that display as nothing (or as a blank) without being a control or format
# character: Unicode's Default_Ignorable_Code_Point set outside Cc/Cf/Cn, plus the braille
# blank. str.isprintable() already rejects every Cc, Cf, Cs, Co, Cn, Zl, Zp and every Zs
# but the ASCII space; these are the invisible ones it accepts.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors (and vowel separator)
    (0x2800, 0x2800),  # braille pattern blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
_INVISIBLE = frozenset(chr(c) for low, high in _INVISIBLE_RANGES for c in range(low, high + 1))
_INVISIBLE_PATTERN = re.compile(
    "["
    + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _INVISIBLE_RANGES)
    + "]"
)
# Short forms for the controls people recognise; every other one is written in hex.
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(code: int) -> str:
    """How one character is shown: itself, or its escape."""
    char = chr(code)
    named = _NAMED.get(char)
    if named is not None:
        return named
    if char.isprintable() and char not in _INVISIBLE:
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _Shown(dict[int, str]):
    """A ``str.translate`` table filled on demand, so each character is decided once.

    Bounded: an agent writing every code point there is must not grow it without end.
    """

    def __missing__(self, code: int) -> str:
        shown = _shown(code)
        if len(self) < _TABLE_LIMIT:
            self[code] = shown
        return shown


_TABLE_LIMIT = 8192
_TABLE = _Shown()


def inert(text: str) -> str:
    r"""``text`` with every character that could steer or fool a display shown as an escape.

    Escaped, in Python's string-literal notation: control characters (C0 including
    newline, tab and carriage return, DEL, C1, so ``ESC`` and the one-byte ``CSI``),
    format characters (bidirectional overrides, isolates and marks, zero-width spaces and
    joiners, the byte-order mark, tags), line and paragraph separators, spaces other than
    the ASCII space, surrogates, private-use and unassigned code points, and the other
    characters that display as nothing (variation selectors, fillers). A backslash is
    doubled, so an agent cannot write text that reads like an escape of something else.

    Every other character, accented and non-Latin letters, emoji and symbols included, is
    kept as it is (an emoji's variation selector or zero-width joiner is shown escaped).
    The result holds none of the escaped characters; distinct inputs give distinct results
    (each escape decodes back to the one character it stands for), and
    ``inert(a + b) == inert(a) + inert(b)``.

    >>> print(inert("credit_limit\x1b[1A\x1b[2K 1000\u202e"))
    credit_limit\x1b[1A\x1b[2K 1000\u202e
    >>> print(inert("a tab\there, a \\ and [bold]markup[/]"))
    a tab\there, a \\ and [bold]markup[/]
    """
    if text.isprintable() and "\\" not in text and not _INVISIBLE_PATTERN.search(text):
        return text  # the common case: one pass in C, no copy
    return text.translate(_TABLE)
