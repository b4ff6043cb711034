-- The management API lists a repository's tags a page at a time, sorted by
-- name (the primary key already serves that) or by published time: this index
-- lets a page sorted by time be read in order and cut by LIMIT/OFFSET without
-- sorting all of a repository's tags.
CREATE INDEX tags_published ON tags (repository_id, updated_at, name);
