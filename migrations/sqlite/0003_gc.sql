-- Online garbage collection, as in GitLab's registry: the events that can leave
-- something dangling queue the affected manifest or blob for review after a delay
-- (re-queuing pushes the review later); a sweep re-checks each due review in a
-- transaction and deletes what is still unreferenced. Triggers do the queuing, so
-- every path (API deletes, cascades, repository deletion) is covered. Each
-- re-queue is DELETE then INSERT: an INSERT OR REPLACE inside a trigger takes
-- the outer statement's conflict policy (an upsert's is ABORT) and would fail.
-- Times are Unix milliseconds.

CREATE TABLE gc_settings (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    review_delay_ms INTEGER NOT NULL
);
INSERT INTO gc_settings (id, review_delay_ms) VALUES (1, 86400000);

CREATE TABLE gc_blob_reviews (
    digest       TEXT    PRIMARY KEY,
    review_after INTEGER NOT NULL,
    event        TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX gc_blob_reviews_due ON gc_blob_reviews (review_after);

-- No foreign key: a review may be queued by a cascade while its manifest is
-- being deleted; the sweep drops reviews of manifests that no longer exist.
CREATE TABLE gc_manifest_reviews (
    manifest_id  INTEGER PRIMARY KEY,
    review_after INTEGER NOT NULL,
    event        TEXT    NOT NULL
);
CREATE INDEX gc_manifest_reviews_due ON gc_manifest_reviews (review_after);

-- Totals since the database was created, and the last sweep.
CREATE TABLE gc_stats (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    last_sweep_at     INTEGER,
    sweeps            INTEGER NOT NULL DEFAULT 0,
    manifests_deleted INTEGER NOT NULL DEFAULT 0,
    blobs_deleted     INTEGER NOT NULL DEFAULT 0,
    bytes_deleted     INTEGER NOT NULL DEFAULT 0,
    uploads_expired   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO gc_stats (id) VALUES (1);

-- A blob linked into a repository (upload, mount): review it.
CREATE TRIGGER gc_queue_blob_linked AFTER INSERT ON repository_blobs BEGIN
    DELETE FROM gc_blob_reviews WHERE digest = NEW.digest;
    INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES (
        NEW.digest,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'blob_upload');
END;

-- A blob unlinked from a repository (blob delete, repository delete).
CREATE TRIGGER gc_queue_blob_unlinked AFTER DELETE ON repository_blobs BEGIN
    DELETE FROM gc_blob_reviews WHERE digest = OLD.digest;
    INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES (
        OLD.digest,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'blob_unlink');
END;

-- A manifest stopped referencing a blob (manifest delete).
CREATE TRIGGER gc_queue_manifest_blob AFTER DELETE ON manifest_blobs BEGIN
    DELETE FROM gc_blob_reviews WHERE digest = OLD.digest;
    INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES (
        OLD.digest,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'manifest_delete');
END;

-- A manifest uploaded (maybe untagged).
CREATE TRIGGER gc_queue_manifest_upload AFTER INSERT ON manifests BEGIN
    DELETE FROM gc_manifest_reviews WHERE manifest_id = NEW.id;
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (
        NEW.id,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'manifest_upload');
END;

-- An index or manifest list stopped listing a manifest.
CREATE TRIGGER gc_queue_manifest_child AFTER DELETE ON manifest_references BEGIN
    DELETE FROM gc_manifest_reviews WHERE manifest_id = OLD.child_id;
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (
        OLD.child_id,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'manifest_list_delete');
END;

-- A manifest's subject was deleted: its referrers (signatures, SBOMs) are reviewed.
CREATE TRIGGER gc_queue_referrers AFTER DELETE ON manifests BEGIN
    DELETE FROM gc_manifest_reviews WHERE manifest_id IN
        (SELECT id FROM manifests WHERE repository_id = OLD.repository_id AND subject_digest = OLD.digest);
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event)
        SELECT id,
               CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
               'subject_delete'
          FROM manifests
         WHERE repository_id = OLD.repository_id AND subject_digest = OLD.digest;
END;

-- A tag deleted, or moved to another manifest.
CREATE TRIGGER gc_queue_tag_delete AFTER DELETE ON tags BEGIN
    DELETE FROM gc_manifest_reviews WHERE manifest_id = OLD.manifest_id;
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (
        OLD.manifest_id,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'tag_delete');
END;

CREATE TRIGGER gc_queue_tag_switch AFTER UPDATE OF manifest_id ON tags
WHEN OLD.manifest_id <> NEW.manifest_id BEGIN
    DELETE FROM gc_manifest_reviews WHERE manifest_id = OLD.manifest_id;
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (
        OLD.manifest_id,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + (SELECT review_delay_ms FROM gc_settings),
        'tag_switch');
END;
