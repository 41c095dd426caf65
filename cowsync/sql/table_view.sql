-- Per-table template: the view that takes the table's name.
-- Rendered by cowsync.render with psycopg.sql; {placeholders} are composed
-- identifiers and literals, never raw user text.
--
-- The change store inherits from the base, so one scan of the base (an append of
-- base and change store) yields every candidate row and the view stays a
-- single-relation query: FOR UPDATE / SKIP LOCKED work through it and key
-- predicates reach both relations' indexes. A base row is shown unless this
-- session holds a current change for its key; a change-store row is shown only
-- when it is this session's live current row.
-- Hardened views are security barriers, so a leaky function in a reader's WHERE
-- clause never sees rows the view's own conditions would hide.
-- The probes are scalar subqueries (each returns at most one row: the current
-- row per session and key is unique) rather than EXISTS, which the planner may
-- turn into a hashed subplan that reads every row of the session per query; a
-- scalar subquery stays a per-row index probe in every plan, generic or custom.
-- Hardened views first check, once per query, that the reader may read the bound
-- session (the session gate: a one-time filter, before any row is read).
CREATE VIEW {view}{options} AS
SELECT {b_columns}
FROM {base} AS _cow_b
WHERE {session_gate}(
    (
        _cow_b.tableoid = {base_regclass}::regclass
        AND (
            SELECT 1 FROM ONLY {changes} AS _cow_c
            WHERE _cow_c._cow_session = {session_expr}
              AND {c_key_equals_b}
              AND _cow_c._cow_current
        ) IS NULL
    )
    OR (
        _cow_b.tableoid = {changes_regclass}::regclass
        AND (
            SELECT 1 FROM ONLY {changes} AS _cow_c
            WHERE _cow_c.ctid = _cow_b.ctid
              AND _cow_c._cow_session = {session_expr}
              AND _cow_c._cow_current
              AND NOT _cow_c._cow_deleted
        ) IS NOT NULL
    )
)
