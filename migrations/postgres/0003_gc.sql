-- Online garbage collection (PostgreSQL): the same queues and events as
-- migrations/sqlite/0003_gc.sql. The events that can leave something dangling
-- queue the affected manifest or blob for review after a delay (re-queuing
-- replaces the review: later, with the new event). Times are Unix milliseconds.

CREATE TABLE gc_settings (
    id              BIGINT PRIMARY KEY CHECK (id = 1),
    review_delay_ms BIGINT NOT NULL
);
INSERT INTO gc_settings (id, review_delay_ms) VALUES (1, 86400000);

CREATE TABLE gc_blob_reviews (
    digest       TEXT   COLLATE "C" PRIMARY KEY,
    review_after BIGINT NOT NULL,
    event        TEXT   NOT NULL
);
CREATE INDEX gc_blob_reviews_due ON gc_blob_reviews (review_after);

-- No foreign key: a review may be queued by a cascade while its manifest is
-- being deleted; the sweep drops reviews of manifests that no longer exist.
CREATE TABLE gc_manifest_reviews (
    manifest_id  BIGINT PRIMARY KEY,
    review_after BIGINT NOT NULL,
    event        TEXT   NOT NULL
);
CREATE INDEX gc_manifest_reviews_due ON gc_manifest_reviews (review_after);

-- Totals since the database was created, and the last sweep.
CREATE TABLE gc_stats (
    id                BIGINT PRIMARY KEY CHECK (id = 1),
    last_sweep_at     BIGINT,
    sweeps            BIGINT NOT NULL DEFAULT 0,
    manifests_deleted BIGINT NOT NULL DEFAULT 0,
    blobs_deleted     BIGINT NOT NULL DEFAULT 0,
    bytes_deleted     BIGINT NOT NULL DEFAULT 0,
    uploads_expired   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO gc_stats (id) VALUES (1);

-- When a review queued now is due.
CREATE FUNCTION gc_review_after() RETURNS BIGINT LANGUAGE sql AS $$
    SELECT CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)
           + (SELECT review_delay_ms FROM gc_settings)
$$;

CREATE FUNCTION gc_queue_blob(d TEXT, ev TEXT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES (d, gc_review_after(), ev)
    ON CONFLICT (digest) DO UPDATE SET review_after = EXCLUDED.review_after, event = EXCLUDED.event
$$;

CREATE FUNCTION gc_queue_manifest(m BIGINT, ev TEXT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (m, gc_review_after(), ev)
    ON CONFLICT (manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after, event = EXCLUDED.event
$$;

-- A blob linked into a repository (upload, mount), or unlinked (blob
-- delete, repository delete).
CREATE FUNCTION gc_on_repository_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM gc_queue_blob(NEW.digest, 'blob_upload');
    ELSE
        PERFORM gc_queue_blob(OLD.digest, 'blob_unlink');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_blob_linked AFTER INSERT ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_on_repository_blobs();
CREATE TRIGGER gc_queue_blob_unlinked AFTER DELETE ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_on_repository_blobs();

-- A manifest stopped referencing a blob (manifest delete).
CREATE FUNCTION gc_on_manifest_blob_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gc_queue_blob(OLD.digest, 'manifest_delete');
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_manifest_blob AFTER DELETE ON manifest_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_on_manifest_blob_delete();

-- A manifest uploaded (maybe untagged).
CREATE FUNCTION gc_on_manifest_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gc_queue_manifest(NEW.id, 'manifest_upload');
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_manifest_upload AFTER INSERT ON manifests
    FOR EACH ROW EXECUTE FUNCTION gc_on_manifest_insert();

-- An index or manifest list stopped listing a manifest.
CREATE FUNCTION gc_on_manifest_reference_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gc_queue_manifest(OLD.child_id, 'manifest_list_delete');
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_manifest_child AFTER DELETE ON manifest_references
    FOR EACH ROW EXECUTE FUNCTION gc_on_manifest_reference_delete();

-- A manifest's subject was deleted: its referrers (signatures, SBOMs) are reviewed.
CREATE FUNCTION gc_on_manifest_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gc_queue_manifest(id, 'subject_delete')
       FROM manifests
      WHERE repository_id = OLD.repository_id AND subject_digest = OLD.digest;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_referrers AFTER DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION gc_on_manifest_delete();

-- A tag deleted, or moved to another manifest.
CREATE FUNCTION gc_on_tag_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM gc_queue_manifest(OLD.manifest_id, 'tag_delete');
    ELSE
        PERFORM gc_queue_manifest(OLD.manifest_id, 'tag_switch');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_queue_tag_delete AFTER DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION gc_on_tag_change();
CREATE TRIGGER gc_queue_tag_switch AFTER UPDATE OF manifest_id ON tags
    FOR EACH ROW WHEN (OLD.manifest_id <> NEW.manifest_id) EXECUTE FUNCTION gc_on_tag_change();
