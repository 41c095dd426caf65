"""A plain-Python model of one COW session on a one-table schema, for test_interleavings.py.

The table is ``t (id int PRIMARY KEY, v int NOT NULL, w int NOT NULL)``, COW-enabled; a
row is ``(v, w)`` by key. The model holds what production and the session must hold:

- ``base``: the committed base rows;
- ``store``: the session's committed change rows, one per (key, operation), with the
  fields docs/design.md describes (first and last write number, current, deleted,
  existed, first-touch image), and its registry entry (known, operations);
- the transaction that holds the session's write lock, if any: an agent transaction
  (``working``: the change rows as it sees them) or the reviewer's open transaction
  after a commit or discard (``held``: base and change rows as they will be if it
  commits).

Each call of the system under test is a method that takes effect at once, the moment
the real call holds the locks it needs (its linearization point), and returns the
outcome it must have; :class:`Blocked` says the call cannot take effect in this state
(it must wait for a lock). An agent statement is two-phase, as in PostgreSQL under READ
COMMITTED: it reads the row (``old``) when it starts, and the trigger re-checks it
against the latest state once it holds the session lock.

Write numbers are the model's own counter: only their order matters, and it is the
order of the engine's ``cowsync.write_seq`` for every write that survives.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Row = tuple[int, int]  # (v, w)
Prov = tuple[frozenset[int], frozenset[int]]  # per column: the writes its value comes from
NO_PROV: Prov = (frozenset(), frozenset())
LABEL = "public.t"
KINDS = ("insert", "update", "delete")
Outcome = tuple[Any, ...]


class Blocked(Exception):
    """The call cannot take effect now: it waits for a lock another transaction holds."""


@dataclass
class Change:
    """One change-store row: what one operation wrote of one key."""

    op: str
    first: int
    seq: int
    current: bool
    deleted: bool
    existed: bool
    before: Row | None
    value: Row
    prov: Prov = NO_PROV  # which writes the value comes from
    writes: set[int] = field(default_factory=set)  # the writes made on this row


@dataclass
class Store:
    """A session's change rows and registry entry."""

    rows: dict[int, dict[str, Change]] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)  # registered, by first write
    known: bool = False  # cowsync.sessions has the session
    discarded: set[int] = field(default_factory=set)  # writes a discard removed

    def changes(self) -> Iterable[tuple[int, Change]]:
        for key in sorted(self.rows):
            for op in sorted(self.rows[key]):
                yield key, self.rows[key][op]

    def current(self, key: int) -> Change | None:
        return next((c for c in self.rows.get(key, {}).values() if c.current), None)

    def view(self, base: dict[int, Row]) -> dict[int, Row]:
        """What a statement in the session reads."""
        seen = dict(base)
        for key in self.rows:
            cur = self.current(key)
            if cur is None:
                continue
            if cur.deleted:
                seen.pop(key, None)
            else:
                seen[key] = cur.value
        return dict(sorted(seen.items()))

    def max_seq(self) -> int:
        return max((c.seq for _, c in self.changes()), default=0)

    def put(
        self,
        key: int,
        op: str,
        value: Row,
        deleted: bool,
        existed: bool,
        before: Row | None,
        seq: int,
        prov: Prov,
        write: int,
    ) -> None:
        """Record one write, as cowsync/sql/table_put.sql does."""
        cur = self.current(key)
        if cur is not None and cur.op == op:
            cur.value, cur.deleted, cur.seq, cur.prov = value, deleted, seq, prov
            cur.writes.add(write)
            return
        if cur is not None:
            cur.current = False
        own = self.rows.setdefault(key, {}).get(op)
        if own is not None:  # revived: its first write, existed and image stay
            own.value, own.seq, own.current, own.deleted = value, seq, True, deleted
            own.prov = prov
            own.writes.add(write)
        else:
            self.rows[key][op] = Change(
                op, seq, seq, True, deleted, existed, before, value, prov, {write}
            )

    def view_prov(self, base_prov: dict[int, Prov], base: dict[int, Row]) -> dict[int, Prov]:
        """Where each value the session reads comes from."""
        seen = {k: base_prov.get(k, NO_PROV) for k in base}
        for key in self.rows:
            cur = self.current(key)
            if cur is None:
                continue
            if cur.deleted:
                seen.pop(key, None)
            else:
                seen[key] = cur.prov
        return seen

    def drop(self, key: int, op: str) -> None:
        """A discard removes a row: its writes must never show again."""
        self.discarded |= self.rows[key].pop(op).writes

    def tidy(self) -> None:
        """Drop keys with no rows left; where a key lost its current row, the latest
        remaining write becomes current (restore_current)."""
        for key in list(self.rows):
            if not self.rows[key]:
                del self.rows[key]
            elif self.current(key) is None:
                max(self.rows[key].values(), key=lambda c: c.seq).current = True

    def forget(self, sealed: bool) -> None:
        """Operations with no rows left leave the registry; then the session, unless sealed."""
        live = {c.op for _, c in self.changes()}
        self.ops = [op for op in self.ops if op in live]
        if not self.ops and not sealed:
            self.known = False

    def dependencies(self) -> dict[str, set[str]]:
        """Same-row dependencies: x needs y when y wrote the key before x's last write."""
        deps: dict[str, set[str]] = {op: set() for op in self.ops}
        for key in self.rows:
            for x in self.rows[key].values():
                for y in self.rows[key].values():
                    if x.op != y.op and y.first < x.seq:
                        deps.setdefault(x.op, set()).add(y.op)
                        deps.setdefault(y.op, set())
        return deps


@dataclass(frozen=True)
class Token:
    """What the model knows of a review: its watermark, rows in scope, operations, and
    what it showed (key -> row after, None for a delete)."""

    wm: int
    rows: int
    ops: tuple[str, ...] | None
    shown: tuple[tuple[int, Row | None], ...] = ()


@dataclass
class Statement:
    """One single-row statement of an agent or of production."""

    kind: str  # set | add | delete | insert
    key: int
    column: int = 0  # 0: v, 1: w
    amount: int = 0  # the value set or added; for insert, v (w is amount + 1)
    write: int = 0  # an id of its own, for provenance

    def new_prov(self, old: Prov) -> Prov:
        mine = frozenset({self.write})
        if self.kind == "insert":
            return (mine, mine)
        cols = list(old)
        cols[self.column] = mine if self.kind == "set" else cols[self.column] | mine
        return (cols[0], cols[1])

    def sql(self) -> tuple[str, list[int]]:
        col = "vw"[self.column]
        if self.kind == "set":
            return f"UPDATE t SET {col} = %s WHERE id = %s", [self.amount, self.key]
        if self.kind == "add":
            return f"UPDATE t SET {col} = {col} + %s WHERE id = %s", [self.amount, self.key]
        if self.kind == "delete":
            return "DELETE FROM t WHERE id = %s", [self.key]
        return "INSERT INTO t (id, v, w) VALUES (%s, %s, %s)", [
            self.key,
            self.amount,
            self.amount + 1,
        ]

    def new_row(self, old: Row) -> Row:
        values = list(old)
        values[self.column] = (
            self.amount if self.kind == "set" else values[self.column] + self.amount
        )
        return (values[0], values[1])

    def __str__(self) -> str:
        text, params = self.sql()
        return text.replace("%s", "{}").format(*params)


def _closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _classify(c: Change) -> str:
    if not c.existed and not c.deleted:
        return "insert"
    if c.existed and c.deleted:
        return "delete"
    if c.existed and c.value != c.before:
        return "update"
    return "none"


@dataclass
class Tx:
    """An agent's open transaction."""

    op: str
    registered: bool = False  # its first write registered the operation (and checked the seal)


@dataclass
class Model:
    base: dict[int, Row]
    store: Store = field(default_factory=Store)
    base_prov: dict[int, Prov] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)  # contract breaches the model saw
    sealed: bool = False
    seq: int = 0
    holder: str | None = None  # who holds the session's write lock: an agent, or "R"
    working: Store | None = None  # the agent holder's change rows
    held: tuple[dict[int, Row], Store, dict[int, Prov]] | None = None  # the reviewer's
    # uncommitted result
    txs: dict[str, Tx] = field(default_factory=dict)
    other: dict[int, Row | None] = field(default_factory=dict)  # session s2: None = deleted

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # --- reads ---------------------------------------------------------------------

    def session_view(self) -> dict[int, Row]:
        return self.store.view(self.base)

    def other_view(self) -> dict[int, Row]:
        """What session s2 reads: the base with its own changes, nothing of s."""
        seen: dict[int, Row | None] = {**self.base, **self.other}
        return {k: v for k, v in sorted(seen.items()) if v is not None}

    def other_write(self, stmt: Statement, old: Row | None) -> Outcome:
        """An autocommit statement in session s2 (its own lock: it never waits)."""
        if stmt.kind == "insert":
            if stmt.key in self.other_view():
                return ("error", "23505")
            self.other[stmt.key] = (stmt.amount, stmt.amount + 1)
            return ("ok", 1)
        if old is None:
            return ("ok", 0)
        self.other[stmt.key] = None if stmt.kind == "delete" else stmt.new_row(old)
        return ("ok", 1)

    def agent_view(self, actor: str) -> dict[int, Row]:
        store = self.working if self.holder == actor and self.working else self.store
        return store.view(self.base)

    def net(self, store: Store, ops: list[str] | None, wm: int | None) -> dict[int, Change]:
        """cowsync.reviewing.net_rows: per key the latest row among ``ops`` (all when
        None) numbered up to ``wm``, leaving out keys a chosen operation rewrote after it."""
        chosen: dict[int, Change] = {}
        for key in sorted(store.rows):
            rows = [c for c in store.rows[key].values() if ops is None or c.op in ops]
            if ops is None and wm is None:
                rows = [c for c in rows if c.current]
            if wm is not None:
                if any(c.first <= wm < c.seq for c in rows):
                    continue
                rows = [c for c in rows if c.seq <= wm]
            if rows:
                chosen[key] = max(rows, key=lambda c: c.seq)
        return chosen

    def diff(
        self, store: Store, ops: list[str] | None = None, wm: int | None = None
    ) -> list[Outcome]:
        """(key, kind, before, after, operation) per changed row, as cowsync.diff gives."""
        out = []
        for key, c in self.net(store, ops, wm).items():
            if not (c.existed or not c.deleted):
                continue
            if c.deleted:
                kind = "delete"
            elif not c.existed:
                kind = "insert"
            elif c.value != c.before:
                kind = "update"
            else:
                continue
            out.append(
                (key, kind, c.before if c.existed else None, None if c.deleted else c.value, c.op)
            )
        return out

    # --- agents --------------------------------------------------------------------

    def agent_begin(self, actor: str, op: str) -> None:
        self.txs[actor] = Tx(op)

    def _abort(self, actor: str) -> None:
        if self.holder == actor:
            self.holder, self.working = None, None
        self.txs.pop(actor, None)

    def agent_end(self, actor: str, commit: bool) -> None:
        if self.holder == actor:
            if commit:
                assert self.working is not None
                self.store = self.working
            self.holder, self.working = None, None
        self.txs.pop(actor, None)

    def agent_write(self, actor: str, stmt: Statement, old: Row | None) -> Outcome:
        """The trigger (cowsync/sql/table_trigger.sql) on the row the statement read."""
        tx = self.txs[actor]
        if stmt.kind != "insert" and old is None:
            return ("ok", 0)  # the statement saw no row: no trigger, no lock
        if self.holder not in (None, actor):
            raise Blocked
        if self.holder is None:
            self.holder, self.working = actor, copy.deepcopy(self.store)
        store = self.working
        assert store is not None
        if not tx.registered:
            if self.sealed:
                self._abort(actor)
                return ("error", "CW001")
            if tx.op not in store.ops:
                store.ops.append(tx.op)
                store.known = True
            tx.registered = True
        key = stmt.key
        cur = store.current(key)
        if stmt.kind == "insert":
            if cur is not None:
                dup, existed, before = not cur.deleted, cur.existed, cur.before
            else:
                dup, existed, before = key in self.base, False, None
            if dup:
                self._abort(actor)
                return ("error", "23505")
            self.seq += 1
            value = (stmt.amount, stmt.amount + 1)
            prov = stmt.new_prov(NO_PROV)
            store.put(key, tx.op, value, False, existed, before, self.seq, prov, stmt.write)
            return ("ok", 1)
        assert old is not None
        if cur is not None:
            if cur.deleted or cur.value != old:
                self._abort(actor)
                return ("error", "40001")
            existed, before, prov = cur.existed, cur.before, cur.prov
        else:
            now = self.base.get(key)
            if now is None:
                return ("ok", 0)  # the row is gone (a discarded insert): skipped
            if now != old:
                self._abort(actor)
                return ("error", "40001")
            existed, before, prov = True, now, self.base_prov.get(key, NO_PROV)
        self.seq += 1
        if stmt.kind == "delete":
            store.put(key, tx.op, old, True, existed, before, self.seq, prov, stmt.write)
        else:
            new, new_prov = stmt.new_row(old), stmt.new_prov(prov)
            store.put(key, tx.op, new, False, existed, before, self.seq, new_prov, stmt.write)
        return ("ok", 1)

    # --- production ------------------------------------------------------------------

    def prod_write(self, stmt: Statement, old: Row | None) -> Outcome:
        """A write with no session: the base, refusing (40001) a row changed since read."""
        key = stmt.key
        if stmt.kind != "insert" and old is None:
            return ("ok", 0)
        bases = [(self.base, self.base_prov)]
        if self.held is not None:
            if self.held[0].get(key) != self.base.get(key):
                raise Blocked  # the reviewer's open commit wrote that row
            bases.append((self.held[0], self.held[2]))
        now = self.base.get(key)
        if stmt.kind == "insert":
            if now is not None:
                return ("error", "23505")
            for base, prov in bases:
                base[key] = (stmt.amount, stmt.amount + 1)
                prov[key] = stmt.new_prov(NO_PROV)
            return ("ok", 1)
        assert old is not None
        if now is None:
            return ("ok", 0)
        if now != old:
            return ("error", "40001")
        for base, prov in bases:
            if stmt.kind == "delete":
                del base[key]
                prov.pop(key, None)
            else:
                base[key] = stmt.new_row(old)
                prov[key] = stmt.new_prov(prov.get(key, NO_PROV))
        return ("ok", 1)

    # --- reviewer --------------------------------------------------------------------

    def review(self, ops: list[str] | None) -> tuple[Token, list[Outcome]]:
        store = self.store
        wm = store.max_seq()
        rows = sum(1 for _, c in store.changes() if ops is None or c.op in ops)
        changes = self.diff(store, ops, wm)
        shown = tuple((c[0], c[3]) for c in changes)
        return Token(wm, rows, None if ops is None else tuple(ops), shown), changes

    def _lock(self, wait: float | None) -> Outcome | None:
        """The session's write lock for a reviewer call: busy, or it waits."""
        if self.holder is None:
            return None
        if wait == 0:
            return ("SessionBusyError",)
        raise Blocked

    def _finish_call(
        self,
        base: dict[int, Row],
        store: Store,
        prov: dict[int, Prov],
        outcome: Outcome,
        hold: bool,
    ) -> Outcome:
        if outcome[0] == "ok":
            if hold:
                self.held, self.holder = (base, store, prov), "R"
            else:
                self.base, self.store, self.base_prov = base, store, prov
        return outcome

    def reviewer_finish(self, commit: bool) -> None:
        assert self.holder == "R" and self.held is not None
        if commit:
            self.base, self.store, self.base_prov = self.held
        self.held, self.holder = None, None

    def resurrected(self) -> set[int]:
        """Discarded writes that a value in production or in the session comes from."""
        found: set[int] = set()
        views = [self.base_prov, self.store.view_prov(self.base_prov, self.base)]
        if self.working is not None:
            views.append(self.working.view_prov(self.base_prov, self.base))
        for view in views:
            for v, w in view.values():
                found |= v | w
        gone = self.store.discarded | (self.working.discarded if self.working else set())
        return found & gone

    def _choose(
        self, store: Store, ops: list[str] | None, include: bool, dependents: bool
    ) -> list[str] | Outcome | None:
        if ops is None:
            return None
        chosen = set(ops)
        if chosen - set(store.ops):
            return ("ConfigurationError",)
        deps = store.dependencies()
        if dependents:
            reverse: dict[str, set[str]] = {op: set() for op in deps}
            for op, needs in deps.items():
                for n in needs:
                    reverse.setdefault(n, set()).add(op)
            deps = reverse
        closed = _closure(chosen, deps)
        if closed - chosen and not include:
            return ("DependencyError", sorted(closed - chosen))
        return [op for op in store.ops if op in closed]

    @staticmethod
    def _drift(store: Store, token: Token, ops: list[str] | None) -> list[tuple[str, int]]:
        kept = newer = rewritten = 0
        for _, c in store.changes():
            if token.ops is None or c.op in token.ops:
                kept += c.first <= token.wm
            if ops is None or c.op in ops:
                newer += c.first > token.wm
                rewritten += c.first <= token.wm < c.seq
        drift = []
        if token.rows > kept:
            drift.append(("missing", token.rows - kept))
        if rewritten:
            drift.append(("rewritten", rewritten))
        if newer:
            drift.append(("newer", newer))
        return drift

    @staticmethod
    def _stale(drift: list[tuple[str, int]], if_changed: str) -> Outcome | None:
        missing = [d for d in drift if d[0] == "missing"]
        refused = missing or (drift if if_changed == "refuse" else [])
        return ("StaleReviewError", refused) if refused else None

    def commit(
        self,
        ops: list[str] | None,
        token: Token | None,
        policy: str,
        if_changed: str,
        include: bool,
        wait: float | None,
        hold: bool,
    ) -> Outcome:
        busy = self._lock(wait)
        if busy:
            return busy
        base, store = copy.deepcopy(self.base), copy.deepcopy(self.store)
        base_prov = dict(self.base_prov)
        if not store.known and not store.rows:
            return ("SessionNotFoundError",)
        if token is not None and token.ops is not None and ops is None:
            ops = [op for op in store.ops if op in token.ops]  # the review's scope
        chosen = self._choose(store, ops, include, dependents=False)
        if isinstance(chosen, tuple):
            return chosen
        if token is not None and token.ops is not None and set(chosen or ()) - set(token.ops):
            return ("ConfigurationError",)  # beyond what the review covered
        wm, drift = None, []
        if token is not None:
            drift = self._drift(store, token, chosen)
            stale = self._stale(drift, if_changed)
            if stale:
                return stale
            wm = token.wm if drift else None
        net = self.net(store, chosen, wm)
        kinds = {key: _classify(c) for key, c in net.items()}
        values = {key: c.value for key, c in net.items()}
        provs = {key: c.prov for key, c in net.items()}
        conflicts = sorted(
            key
            for key, c in net.items()
            if (kinds[key] in ("update", "delete") and base.get(key) != c.before)
            or (kinds[key] == "insert" and key in base)
        )
        if conflicts and policy == "abort":
            return ("ConflictError", conflicts)
        if conflicts and policy == "merge":
            unresolved = [
                k for k in conflicts if not self._mergeable(net[k], kinds[k], base.get(k))
            ]
            if unresolved:
                return ("ConflictError", unresolved)
        for key in conflicts:
            c, now = net[key], base.get(key)
            if policy == "skip":
                kinds[key] = "skip"
            elif policy == "overwrite":
                if kinds[key] == "insert":
                    kinds[key] = "update"
                elif now is None:
                    kinds[key] = "insert" if kinds[key] == "update" else "none"
            else:  # merge: the session's changed columns over the base's
                assert c.before is not None and now is not None
                mine = [c.value[i] != c.before[i] for i in (0, 1)]
                values[key] = (
                    c.value[0] if mine[0] else now[0],
                    c.value[1] if mine[1] else now[1],
                )
                old_prov = base_prov.get(key, NO_PROV)
                provs[key] = (
                    c.prov[0] if mine[0] else old_prov[0],
                    c.prov[1] if mine[1] else old_prov[1],
                )
        counts = dict.fromkeys(KINDS, 0)
        shown = None if token is None else dict(token.shown)
        for key, kind in kinds.items():
            if kind in ("insert", "update"):
                base[key], base_prov[key] = values[key], provs[key]
            elif kind == "delete":
                del base[key]
                base_prov.pop(key, None)
            if kind in counts:
                counts[kind] += 1
                # The contract: with a token, only what the review showed lands, as shown.
                after = None if kind == "delete" else values[key]
                merged = policy == "merge" and key in conflicts
                if shown is not None and (key not in shown or (shown[key] != after and not merged)):
                    self.violations.append(
                        f"commit(reviewed=...) applied key {key} as {after}; the review "
                        f"showed {shown.get(key, 'nothing of it')}"
                    )
        # settle_session: what the commit read goes; what remains builds on the new base.
        for key, c in net.items():
            for op, row in list(store.rows[key].items()):
                if (chosen is None or op in chosen) and row.seq <= c.seq:
                    del store.rows[key][op]
            for row in store.rows[key].values():
                row.existed, row.before = key in base, base.get(key)
        store.tidy()
        store.forget(self.sealed)
        applied = {LABEL: counts} if any(counts.values()) else {}
        handled = [(key, policy) for key in conflicts]
        return self._finish_call(base, store, base_prov, ("ok", applied, handled, drift), hold)

    @staticmethod
    def _mergeable(c: Change, kind: str, now: Row | None) -> bool:
        """An update whose base row is there, with no column both sides changed apart."""
        if kind != "update" or now is None or c.before is None:
            return False
        return not any(
            c.value[i] != c.before[i] and now[i] != c.before[i] and c.value[i] != now[i]
            for i in (0, 1)
        )

    def discard(
        self,
        ops: list[str] | None,
        token: Token | None,
        if_changed: str,
        include: bool,
        wait: float | None,
        hold: bool,
    ) -> Outcome:
        busy = self._lock(wait)
        if busy:
            return busy
        base, store = self.base, copy.deepcopy(self.store)
        if not store.known and not store.rows:
            return ("SessionNotFoundError",)
        if token is not None and token.ops is not None and ops is None:
            ops = [op for op in store.ops if op in token.ops]  # the review's scope
        chosen = self._choose(store, ops, include, dependents=True)
        if isinstance(chosen, tuple):
            return chosen
        if token is not None and token.ops is not None and set(chosen or ()) - set(token.ops):
            return ("ConfigurationError",)  # beyond what the review covered
        drift: list[tuple[str, int]] = []
        removed = 0
        if token is not None:
            drift = self._drift(store, token, chosen)
            stale = self._stale(drift, if_changed)
            if stale:
                return stale
        if drift:
            assert token is not None
            wm = token.wm
            for key in list(store.rows):
                mine = [c for c in store.rows[key].values() if chosen is None or c.op in chosen]
                if any(c.seq > wm for c in mine):
                    continue  # written since the review, maybe from what it showed: it stays
                for c in mine:
                    store.drop(key, c.op)
                    removed += 1
            kept = sum(
                1
                for _, c in store.changes()
                if (chosen is None or c.op in chosen) and c.first <= wm
            )
            drift = [("rewritten", kept)] * bool(kept) + [d for d in drift if d[0] != "rewritten"]
        else:
            for key in list(store.rows):
                for op in list(store.rows[key]):
                    if chosen is None or op in chosen:
                        store.drop(key, op)
                        removed += 1
        store.tidy()
        store.forget(self.sealed)
        discarded = {LABEL: removed} if removed else {}
        outcome = ("ok", discarded, drift)
        return self._finish_call(dict(base), store, dict(self.base_prov), outcome, hold)

    def seal(self, wait: float | None) -> Outcome:
        busy = self._lock(wait)
        if busy:
            return busy
        if not self.store.known:
            return ("SessionNotFoundError",)
        was = self.sealed
        self.sealed = True
        return ("ok", not was)

    def unseal(self) -> Outcome:
        if not self.store.known:
            return ("SessionNotFoundError",)
        was = self.sealed
        self.sealed = False
        return ("ok", was)
