-- cowsync engine, migration 4: overlay mode. Idempotent, like every migration.
--
-- An overlay table keeps its name and schema (production uses it directly). Its view,
-- change store and the empty parent both of them inherit from (so the view stays a
-- single relation that FOR UPDATE works through) live in an overlay schema that bound
-- connections put first on their search_path. In place tables keep NULLs here.
ALTER TABLE cowsync.tables ADD COLUMN IF NOT EXISTS view_schema text;
ALTER TABLE cowsync.tables ADD COLUMN IF NOT EXISTS parent_name text;
