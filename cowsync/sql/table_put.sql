-- Per-table template fragment: record one session write of {row} (NEW or OLD).
-- The operation's own row is updated in place when it is current; otherwise the
-- previous current row is retired and this operation's row becomes current
-- (inserted, or revived when this operation wrote the key before).
_cow_v_seq := pg_catalog.nextval('cowsync.write_seq');
IF {has_current} AND {current_operation} = _cow_v_op THEN
    UPDATE ONLY {changes} AS _cow_c
        SET ({columns}) = ROW({row_values}),
            _cow_deleted = {deleted},
            _cow_seq = _cow_v_seq,
            _cow_written_at = pg_catalog.clock_timestamp()
        WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_row} AND _cow_c._cow_current;
ELSE
    IF {has_current} THEN
        UPDATE ONLY {changes} AS _cow_c SET _cow_current = false
            WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_row} AND _cow_c._cow_current;
    END IF;
    INSERT INTO {changes} AS _cow_c ({columns}, _cow_session, _cow_operation, _cow_first_seq,
                                     _cow_seq, _cow_current, _cow_deleted, _cow_existed,
                                     _cow_before, _cow_written_at)
        VALUES ({row_values}, _cow_v_sid, _cow_v_op, _cow_v_seq, _cow_v_seq,
                true, {deleted}, {existed}, {before}, pg_catalog.clock_timestamp())
        ON CONFLICT ON CONSTRAINT {history_constraint} DO UPDATE
        SET ({columns}) = ROW({excluded_values}),
            _cow_seq = EXCLUDED._cow_seq,
            _cow_current = true,
            _cow_deleted = EXCLUDED._cow_deleted,
            _cow_written_at = EXCLUDED._cow_written_at;
END IF;
