"""What an agent writes cannot steer the reviewer's terminal or pass for another value.

An agent controls the values of the rows it writes (keys included), its session's label and
metadata. Every command that shows them prints them through :func:`cowsync.inert.inert`:
control, bidirectional and invisible characters appear as escapes, never as themselves.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import unicodedata
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

import cowsync
from cowsync.cli import display, jsonout
from cowsync.inert import inert

from .conftest import Invoke

# Wide enough that no value is folded across lines, so each shows whole on one line.
WIDE = {"COLUMNS": "400"}

# Values an agent might write to fool a reviewer, each with what the terminal would have done.
HOSTILE = {
    "erase line": "ok\x1b[2K",
    "cursor up and overwrite": "\x1b[1A\x1b[2K* credit_limit 1000",
    "carriage return": "1000\r999999",
    "hyperlink": "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",
    "right-to-left override": "\u202e0001 timil_tiderc",
    "isolate and mark": "\u2066x\u2069\u200f\u061c",
    "one-byte CSI": "\x9b2Kgone",
    "rich markup": "[bold red]x[/]",
    "rich link": "[link=https://evil.example]y[/link]",
    "fake escape": "\\x1b[2K",
    "fake override": "\\u202e0001",
    "zero width": "a\u200bb\u200d\ufeffc",
    "line separator": "first\u2028second\u2029third",
    "newline and tab": "one\ntwo\tthree",
    "bell and delete": "ding\x07\x7f",
    "next line": "x\x85y",
    "no-break space": "1\u00a0000",
}
# Values that look alike once the terminal had its way: each must still show differently.
LOOK_ALIKES = [
    ("\x1b[2K", "\\x1b[2K"),
    ("1000\r999999", "1000\\r999999"),
    ("ab", "a\u200bb"),
    ("x y", "x\ty", "x\\ty", "x\u00a0y"),
    ("\u202eabc", "\\u202eabc"),
    ("x", "[bold]x[/]"),
    ("\\", "\\\\"),
]

# What inert escapes: categories of control, format, separator, surrogate, private-use and
# unassigned characters (every space but " "), and the invisible ones listed in inert.py.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}
_INVISIBLE = frozenset(
    chr(code)
    for low, high in [
        (0x034F, 0x034F),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x2800, 0x2800),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFFA0, 0xFFA0),
        (0xE0100, 0xE01EF),
    ]
    for code in range(low, high + 1)
)


def unsafe(char: str) -> bool:
    """A character a terminal could act on, or that shows as nothing or as another."""
    return (unicodedata.category(char) in _UNSAFE_CATEGORIES and char != " ") or char in _INVISIBLE


_ESCAPE = re.compile(r"\\(?:(\\)|([nrt])|x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))")


def undo(shown: str) -> str:
    """The text ``inert`` was given: proof that no two texts are shown alike."""

    def one(match: re.Match[str]) -> str:
        backslash, named, *codes = match.groups()
        if backslash:
            return "\\"
        if named:
            return {"n": "\n", "r": "\r", "t": "\t"}[named]
        return chr(int(next(c for c in codes if c), 16))

    rest = _ESCAPE.sub("", shown)
    assert "\\" not in rest, f"a backslash outside an escape in {shown!r}"
    return _ESCAPE.sub(one, shown)


def assert_inert(output: str) -> None:
    """No character in ``output`` but line feeds can drive a terminal or hide."""
    raw = sorted({c for c in output if c != "\n" and unsafe(c)})
    assert not raw, f"raw characters reached the output: {raw!r}"


# --- inert() ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2K", "\\x1b[2K"),
        ("\x00\x01\x1f", "\\x00\\x01\\x1f"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x7f\x80\x9b\x9f", "\\x7f\\x80\\x9b\\x9f"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\u200b\u200c\u200d\u2060\ufeff", "\\u200b\\u200c\\u200d\\u2060\\ufeff"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u00a0\u3000", "\\xa0\\u3000"),
        ("\u00ad", "\\xad"),  # soft hyphen
        ("\U000e0041", "\\U000e0041"),  # a tag character
        ("\ud800", "\\ud800"),  # a lone surrogate
        ("\ue000", "\\ue000"),  # private use
        ("\u0378", "\\u0378"),  # unassigned
        ("\ufe0f\u3164\u2800", "\\ufe0f\\u3164\\u2800"),  # invisible, not Cf
        ("\\", "\\\\"),
        ("\\x1b", "\\\\x1b"),
    ],
)
def test_inert_escapes(text: str, shown: str) -> None:
    assert inert(text) == shown
    assert undo(shown) == text


@pytest.mark.parametrize(
    "text",
    ["", "plain", "café naïve Ærø", "日本語のテキスト", "שלום עולם", "emoji 😀🚀", "a b", "[x](y)"],
)
def test_inert_keeps_readable_text_as_it_is(text: str) -> None:
    assert inert(text) == text


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_inert_output_never_holds_an_unsafe_character(text: str) -> None:
    shown = inert(text)
    assert_inert(shown)
    assert undo(shown) == text  # so inert is injective


@given(
    st.text(st.characters(codec=None, exclude_categories=())),
    st.text(st.characters(codec=None, exclude_categories=())),
)
def test_distinct_texts_are_shown_distinctly(a: str, b: str) -> None:
    assert (inert(a) == inert(b)) == (a == b)
    assert inert(a + b) == inert(a) + inert(b)


def test_every_code_point_in_use_is_shown_safely_and_decodes_back() -> None:
    # Planes 0 and 1 hold every script and emoji; plane 14 the tags and variation selectors.
    # (Random code points from all planes are the property tests' job.)
    everything = "".join(map(chr, [*range(0x20000), *range(0xE0000, 0xE0200)]))
    shown = inert(everything)
    assert_inert(shown)
    assert undo(shown) == everything


@pytest.mark.parametrize("group", LOOK_ALIKES)
def test_look_alikes_are_shown_differently(group: tuple[str, ...]) -> None:
    assert len({inert(value) for value in group}) == len(group)


# --- the commands ------------------------------------------------------------------------


@pytest.fixture
def hostile(conn: psycopg.Connection[Any]) -> str:
    """Session ``mallory``: one row per hostile value in ``notes`` (key and body), and a
    hostile label and metadata. Returns the session id."""
    conn.execute("CREATE TABLE notes (key text PRIMARY KEY, body text NOT NULL)")
    conn.execute("INSERT INTO notes VALUES ('kept', 'production value')")
    cowsync.deploy(conn)
    cowsync.enable(conn, "notes")
    with cowsync.session(conn, "mallory", "write-notes"):
        for value in HOSTILE.values():
            conn.execute("INSERT INTO notes (key, body) VALUES (%s, %s)", ("k" + value, value))
    with cowsync.session(conn, "mallory", "edit-kept"):
        conn.execute("UPDATE notes SET body = %s WHERE key = 'kept'", (HOSTILE["carriage return"],))
    cowsync.annotate(
        conn,
        "mallory",
        label="\x1b[2K[bold red]reviewed[/] \u202eko",
        metadata={"note\x1b[1A": "\x9b2J"},
    )
    return "mallory"


def _diff_rows(output: str) -> dict[str, str]:
    """``{shown key: shown body}`` from the detail of ``cowsync diff`` on ``notes``."""
    rows: dict[str, str] = {}
    key = None
    for line in output.splitlines():
        header = re.match(r"^[+~-] (?:insert|update|delete) +public\.notes  key=(.*)  by ", line)
        if header:
            key = header.group(1)
        body = re.match(r"^[+~*-] +body +(.*?) *$", line)
        if body and key is not None:
            rows[key] = body.group(1)
    return rows


def test_diff_shows_every_hostile_value_escaped_and_distinct(invoke: Invoke, hostile: str) -> None:
    result = invoke("diff", hostile, "--limit", "0", env=WIDE)
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    rows = _diff_rows(result.stdout)
    for value in HOSTILE.values():
        assert rows[inert("k" + value)] == inert(value)
    assert rows["kept"] == "production value → " + inert(HOSTILE["carriage return"])
    # Every row shows under its own key, with its own body: none passes for another.
    assert len(rows) == len(HOSTILE) + 1
    assert len(set(rows.values())) == len(rows)
    assert {undo(key) for key in rows} == {"kept"} | {"k" + v for v in HOSTILE.values()}


def test_a_value_cannot_overwrite_the_line_above_it(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    """The red team's attack: a short value moved the cursor up and rewrote the
    ``credit_limit 1000 → 999999`` line of another row as ``credit_limit 1000``."""
    conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, credit_limit int)")
    conn.execute("INSERT INTO customers VALUES (1, 'Ann', 1000), (2, 'Bob', 1000)")
    cowsync.deploy(conn)
    cowsync.enable(conn, "customers")
    attack = "\x1b[2A\x1b[2K* credit_limit  1000\x1b[1B\r"
    with cowsync.session(conn, "s1", "raise-limit"):
        conn.execute("UPDATE customers SET credit_limit = 999999 WHERE id = 1")
    with cowsync.session(conn, "s1", "rename"):
        conn.execute("UPDATE customers SET name = %s WHERE id = 2", (attack,))
    out = invoke("diff", "s1", env=WIDE).stdout
    assert_inert(out)
    assert re.search(r"^\* credit_limit +1000 → 999999 *$", out, re.MULTILINE)
    assert "Bob → " + inert(attack) in out


def test_diff_json_is_valid_exact_and_safe_to_print(invoke: Invoke, hostile: str) -> None:
    result = invoke("diff", hostile, "--json")
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "\\u202e" in result.stdout and "\\u009b" in result.stdout
    data = json.loads(result.stdout)
    bodies = {c["key"]["key"]: c["after"]["body"] for c in data["changes"]}
    assert bodies == {"kept": HOSTILE["carriage return"]} | {"k" + v: v for v in HOSTILE.values()}


def test_json_keeps_readable_text_unescaped() -> None:
    text = jsonout.dumps({"name": "café 日本 😀", "bad": "\u202e\x7f\x85\u2028\U000e0041"})
    assert "café 日本 😀" in text
    assert "\\u202e\\u007f\\u0085\\u2028\\udb40\\udc41" in text
    assert_inert(text)
    assert json.loads(text)["bad"] == "\u202e\x7f\x85\u2028\U000e0041"


def test_sessions_show_a_hostile_label_escaped(invoke: Invoke, hostile: str) -> None:
    result = invoke("sessions", env=WIDE)
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "\\x1b[2K[bold red]reviewed[/] \\u202eko" in result.stdout
    data = json.loads(invoke("sessions", "--json").stdout)
    (session,) = data["sessions"]
    assert session["label"] == "\x1b[2K[bold red]reviewed[/] \u202eko"
    assert session["metadata"] == {"note\x1b[1A": "\x9b2J"}
    listed = invoke("sessions", "--json").stdout
    assert_inert(listed)


@pytest.mark.parametrize(
    "command", [["operations"], ["deps"], ["diff", "--stat"], ["operations", "--json"]]
)
def test_other_review_commands_print_nothing_raw(
    invoke: Invoke, hostile: str, command: list[str]
) -> None:
    result = invoke(command[0], hostile, *command[1:], env=WIDE)
    assert result.exit_code == 0, result.output
    assert_inert(result.output)
    if command[0] != "diff":
        assert "write-notes" in result.stdout


def test_conflicts_show_hostile_values_escaped(
    invoke: Invoke, hostile: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("UPDATE notes SET body = %s WHERE key = 'kept'", ("\u202eproduction\x1b[0m",))
    result = invoke("commit", hostile, "--yes", env=WIDE)
    assert result.exit_code == 2, result.output
    assert_inert(result.output)
    assert inert(HOSTILE["carriage return"]) in result.stdout
    assert "\\u202eproduction\\x1b[0m" in result.stdout
    as_json = invoke("commit", hostile, "--yes", "--json")
    assert as_json.exit_code == 2
    assert_inert(as_json.stdout)
    (conflict,) = json.loads(as_json.stdout)["conflicts"]
    assert conflict["base"]["body"] == "\u202eproduction\x1b[0m"


def test_a_constraint_error_quoting_a_hostile_value_is_escaped(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE tags (id int PRIMARY KEY, name text UNIQUE)")
    cowsync.deploy(conn)
    cowsync.enable(conn, "tags")
    value = "\x1b[1A\x1b[2Kdone\r\u202e\nHINT: all good"
    with cowsync.session(conn, "s1", "tag"):
        conn.execute("INSERT INTO tags VALUES (1, %s)", (value,))
    conn.execute("INSERT INTO tags VALUES (2, %s)", (value,))  # production takes it first
    result = invoke("commit", "s1", "--yes", env=WIDE)
    assert result.exit_code == 2, result.output
    assert_inert(result.output)
    assert result.stderr.startswith("error: ")
    assert "\\x1b[1A\\x1b[2Kdone\\r\\u202e" in result.stderr


def test_discard_prints_nothing_raw(invoke: Invoke, hostile: str) -> None:
    result = invoke("discard", hostile, "--yes", env=WIDE)
    assert result.exit_code == 0, result.output
    assert_inert(result.output)


# --- the display functions, whatever console they are given ------------------------------


def _terminal() -> tuple[Console, io.StringIO]:
    """A console that believes it is a colour terminal, with markup switched on."""
    out = io.StringIO()
    console = Console(
        file=out, force_terminal=True, color_system="truecolor", width=300, markup=True
    )
    return console, out


def _without_styles(output: str) -> str:
    """The output minus the colour codes (SGR sequences) the console itself wrote."""
    return re.sub(r"\x1b\[[0-9;]*m", "", output)


def test_display_never_reads_agent_text_as_markup_even_on_a_markup_console(
    conn: psycopg.Connection[Any], hostile: str
) -> None:
    # Ids the engine would refuse, as a registry written behind its back could hold them.
    (info,) = cowsync.sessions(conn)
    evil_id = "[link=https://evil.example]s[/link]\x1b]8;;x\x07"
    console, out = _terminal()
    display.render_sessions(console, [dataclasses.replace(info, session_id=evil_id)])
    operations = [
        dataclasses.replace(op, operation_id="[red]op[/]\x9b2K")
        for op in cowsync.operations(conn, hostile)
    ]
    display.render_operations(console, evil_id, operations, {})
    display.render_dependencies(console, evil_id, {"[red]op[/]\x9b2K": {"\u202eother"}})
    display.render_diff(console, cowsync.diff(conn, hostile))
    assert "\x1b]" not in out.getvalue()  # no hyperlink or other OSC sequence
    output = _without_styles(out.getvalue())
    assert_inert(output)
    assert inert(evil_id) in output
    assert "\\x1b[2K[bold red]reviewed[/] \\u202eko" in output
    assert "[red]op[/]\\x9b2K" in output and "\\u202eother" in output


def test_a_long_value_is_cut_without_splitting_an_escape() -> None:
    text = display.value_text("x" * 57 + "\x1b[2K").plain
    assert text == "x" * 57 + "…"
    text = display.value_text("x" * 50 + "\x1b" * 10).plain
    assert text == "x" * 50 + "\\x1b" * 2 + "…"
    assert display.value_text("\x1b" * 10, whole=True).plain == "\\x1b" * 10


def test_a_change_hidden_past_the_cut_is_shown_whole(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    same = "y" * 70
    conn.execute("INSERT INTO docs VALUES (1, %s)", (same + "safe",))
    cowsync.deploy(conn)
    cowsync.enable(conn, "docs")
    with cowsync.session(conn, "s1", "edit"):
        conn.execute("UPDATE docs SET body = %s WHERE id = 1", (same + "EVIL",))
    out = invoke("diff", "s1", env=WIDE).stdout
    assert f"{same}safe → {same}EVIL" in out
