"""Property: committing a dependency-closed subset of operations equals replaying them.

Random histories on two FK-linked tables (``p`` and its child ``c``) in session s1, with a
second session s2 writing the same tables in between as noise. Every statement targets
rows by key and is recorded with the operation that ran it; inserts record the key the
session got, so the replay on the plain copies (``p_plain``, ``c_plain``, same seed, same
foreign key) inserts the same keys. A random subset of s1's operations, closed under
``cowsync.dependencies``, is committed; the bases must then equal the plain copies with
only those operations' statements replayed, in their original order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowsync
from tests.apply._state import rows, session_state

SEED_PARENTS = {1: 10, 2: 20, 3: 30}
SEED_CHILDREN = {1: (1, "c1"), 2: (1, "c2"), 3: (2, "c3")}


@dataclass
class Model:
    """What one session sees, so the generator only writes statements that succeed."""

    parents: dict[int, int] = field(default_factory=lambda: dict(SEED_PARENTS))
    children: dict[int, tuple[int, str]] = field(default_factory=lambda: dict(SEED_CHILDREN))

    def childless(self) -> list[int]:
        used = {p for p, _ in self.children.values()}
        return sorted(set(self.parents) - used)


@dataclass
class Step:
    """One statement: how the session ran it and how to replay it on the plain copies."""

    operation: str
    replay: str
    params: list[Any]


@pytest.fixture
def world(cow: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    cow.execute(
        """
        CREATE TABLE p (id serial PRIMARY KEY, score int NOT NULL);
        CREATE TABLE c (id serial PRIMARY KEY, p_id int NOT NULL REFERENCES p, note text);
        CREATE TABLE p_plain (id int PRIMARY KEY, score int NOT NULL);
        CREATE TABLE c_plain (id int PRIMARY KEY, p_id int NOT NULL REFERENCES p_plain,
                              note text);
        SELECT setval('p_id_seq', 100), setval('c_id_seq', 100);
        """
    )
    cowsync.enable(cow, "p")
    cowsync.enable(cow, "c")
    return cow


def reset(conn: psycopg.Connection[Any]) -> None:
    """Back to the seed: no sessions, seeded bases, seeded plain copies."""
    live = {s.session_id for s in cowsync.sessions(conn)}
    for sid in ("s1", "s2"):
        if sid in live:
            cowsync.discard(conn, sid)
    with conn.transaction():
        for prefix in ("", "plain"):
            p, c = ("p_plain", "c_plain") if prefix else ("p", "c")
            conn.execute(f"DELETE FROM {c}")
            conn.execute(f"DELETE FROM {p}")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {p} (id, score) VALUES (%s, %s)", list(SEED_PARENTS.items())
                )
                cur.executemany(
                    f"INSERT INTO {c} (id, p_id, note) VALUES (%s, %s, %s)",
                    [(k, *v) for k, v in SEED_CHILDREN.items()],
                )


def run_statement(
    conn: psycopg.Connection[Any], data: st.DataObject, session: str, op: str, model: Model
) -> Step:
    """Draw one statement that is valid in ``model``, run it in the session, record it."""
    # Few rows and many deletes, so operations often build on each other's rows.
    kinds = ["insert_parent"]
    if model.parents:
        kinds += ["update_parent", "insert_child"]
    if model.children:
        kinds += ["update_child", "repoint_child", "delete_child", "delete_child"]
    if model.childless():
        kinds += ["delete_parent", "delete_parent"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    small = st.integers(0, 9)
    with cowsync.session(conn, session, op):
        if kind == "insert_parent":
            score = data.draw(small)
            (new_id,) = conn.execute(
                "INSERT INTO p (score) VALUES (%s) RETURNING id", [score]
            ).fetchone()
            model.parents[new_id] = score
            return Step(op, "INSERT INTO p_plain (id, score) VALUES (%s, %s)", [new_id, score])
        if kind == "update_parent":
            target = data.draw(st.sampled_from(sorted(model.parents)))
            delta = data.draw(small)
            conn.execute("UPDATE p SET score = score + %s WHERE id = %s", [delta, target])
            model.parents[target] += delta
            return Step(op, "UPDATE p_plain SET score = score + %s WHERE id = %s", [delta, target])
        if kind == "delete_parent":
            target = data.draw(st.sampled_from(model.childless()))
            conn.execute("DELETE FROM p WHERE id = %s", [target])
            del model.parents[target]
            return Step(op, "DELETE FROM p_plain WHERE id = %s", [target])
        if kind == "insert_child":
            parent = data.draw(st.sampled_from(sorted(model.parents)))
            note = f"n{data.draw(small)}"
            (new_id,) = conn.execute(
                "INSERT INTO c (p_id, note) VALUES (%s, %s) RETURNING id", [parent, note]
            ).fetchone()
            model.children[new_id] = (parent, note)
            return Step(
                op,
                "INSERT INTO c_plain (id, p_id, note) VALUES (%s, %s, %s)",
                [new_id, parent, note],
            )
        target = data.draw(st.sampled_from(sorted(model.children)))
        if kind == "update_child":
            note = f"u{data.draw(small)}"
            conn.execute("UPDATE c SET note = %s WHERE id = %s", [note, target])
            model.children[target] = (model.children[target][0], note)
            return Step(op, "UPDATE c_plain SET note = %s WHERE id = %s", [note, target])
        if kind == "repoint_child":
            parent = data.draw(st.sampled_from(sorted(model.parents)))
            conn.execute("UPDATE c SET p_id = %s WHERE id = %s", [parent, target])
            model.children[target] = (parent, model.children[target][1])
            return Step(op, "UPDATE c_plain SET p_id = %s WHERE id = %s", [parent, target])
        conn.execute("DELETE FROM c WHERE id = %s", [target])
        del model.children[target]
        return Step(op, "DELETE FROM c_plain WHERE id = %s", [target])


def closed_under_dependencies(chosen: set[str], deps: dict[str, set[str]]) -> set[str]:
    closed = set(chosen)
    todo = list(chosen)
    while todo:
        for needed in deps.get(todo.pop(), set()):
            if needed not in closed:
                closed.add(needed)
                todo.append(needed)
    return closed


def plain_state(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {"p": rows(conn, "p_plain"), "c": rows(conn, "c_plain")}


def base_state(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {"p": rows(conn, "p"), "c": rows(conn, "c")}


def session_view(conn: psycopg.Connection[Any], sid: str) -> dict[str, list[tuple[Any, ...]]]:
    return {"p": rows(conn, "p", sid), "c": rows(conn, "c", sid)}


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_committing_a_closed_subset_equals_replaying_its_statements(world, data):
    conn = world
    reset(conn)
    main, noise = Model(), Model()
    steps: list[Step] = []
    operations = [f"op{n}" for n in range(data.draw(st.integers(2, 6), label="operations"))]
    for op in operations:
        for _ in range(data.draw(st.integers(1, 3), label="statements")):
            steps.append(run_statement(conn, data, "s1", op, main))
        if data.draw(st.booleans(), label="noise"):
            run_statement(conn, data, "s2", "noise", noise)

    deps = cowsync.dependencies(conn, "s1")
    picked = data.draw(st.sets(st.sampled_from(operations)), label="picked")
    chosen = closed_under_dependencies(picked, deps)
    session_before = session_view(conn, "s1")
    noise_before = session_state(conn, "s2")

    if "s1" not in {s.session_id for s in cowsync.sessions(conn)}:
        return  # no statement of s1 wrote anything: nothing to commit (an error, tested elsewhere)
    result = cowsync.commit(conn, "s1", operations=sorted(chosen))

    with conn.transaction():
        for step in steps:
            if step.operation in chosen:
                conn.execute(step.replay, step.params)
    assert result.conflicts == []
    assert base_state(conn) == plain_state(conn)
    # The rest of the session still reads as before; the noise session is untouched.
    assert session_view(conn, "s1") == session_before
    assert session_state(conn, "s2") == noise_before

    # Committing the rest brings the base to what the session saw.
    if "s1" in {s.session_id for s in cowsync.sessions(conn)}:
        cowsync.commit(conn, "s1")
    assert base_state(conn) == session_before
