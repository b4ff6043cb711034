-- Nothing on SQLite: PostgreSQL's 0007 adds berth_put_manifest, a manifest
-- PUT in one round trip; SQLite runs the same steps as statements from
-- metadata/manifests.rs (in-process: a statement costs no round trip). Kept
-- so both backends have the same schema versions.
SELECT 1;
