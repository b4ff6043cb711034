-- Nothing on SQLite: PostgreSQL's 0008 reorders berth_put_manifest (checks
-- before writes, no subtransaction per PUT of a batch) and makes the GC
-- queueing helpers PL/pgSQL; SQLite has neither. Kept so both backends have
-- the same schema versions.
SELECT 1;
