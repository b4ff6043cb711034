-- Cheaper manifest PUTs on PostgreSQL (0007 made them one call per batch):
--
-- 1. A PUT checks everything that can refuse it before it writes anything,
--    so a refused PUT leaves nothing to roll back and a batch needs no
--    subtransaction per PUT. Subtransactions were the costliest part of a
--    batch: every foreign-key check of every subtransaction locks the
--    repository's row under a transaction id of its own, so the row's lockers
--    became a MultiXact that each later PUT of the batch had to read in full
--    (GetMultiXactIdMembers was the top function in `perf` under the manifest
--    PUT load). Refusals now come back as values, not errors. An unexpected
--    error fails the whole call, nothing of it stored, and the caller runs
--    the batch's PUTs again one by one (metadata/put_batch.rs) so one bad PUT
--    still fails alone.
-- 2. The review-queueing helpers the GC triggers call are PL/pgSQL instead of
--    SQL: PostgreSQL parses and plans a SQL function on every call, a
--    PL/pgSQL one once per session.
--
-- berth_put_manifests keeps its signature and answer, so a replica still on
-- 0007's binary keeps working against this schema during a rolling upgrade.

CREATE OR REPLACE FUNCTION gc_review_after() RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    RETURN CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)
           + (SELECT review_delay_ms FROM gc_settings);
END $$;

CREATE OR REPLACE FUNCTION gc_queue_blob(d TEXT, ev TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES (d, gc_review_after(), ev)
    ON CONFLICT (digest) DO UPDATE SET review_after = EXCLUDED.review_after, event = EXCLUDED.event;
END $$;

CREATE OR REPLACE FUNCTION gc_queue_manifest(m BIGINT, ev TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_manifest_reviews (manifest_id, review_after, event) VALUES (m, gc_review_after(), ev)
    ON CONFLICT (manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after, event = EXCLUDED.event;
END $$;

-- One PUT, under the write lock its caller holds: NULL when stored, or the
-- refusal ({"code": SQLSTATE, "message": ...}; the codes of 0007: BR001 a
-- blob the repository lacks, BR002 a child manifest it lacks, BR003 creating
-- the tag is refused, BR004 moving it is refused) with nothing written.
DROP FUNCTION berth_put_manifest(TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, BYTEA, BIGINT,
                                 TEXT, TEXT, TEXT, BOOLEAN, BOOLEAN);
CREATE FUNCTION berth_put_manifest(
    p_repo TEXT, p_digest TEXT, p_media_type TEXT, p_artifact_type TEXT, p_size BIGINT,
    p_config TEXT, p_subject TEXT, p_annotations TEXT, p_payload BYTEA, p_now BIGINT,
    p_blobs TEXT, p_children TEXT, p_tag TEXT, p_may_create BOOLEAN, p_may_move BOOLEAN)
RETURNS JSONB LANGUAGE plpgsql
-- Its statements are planned once: with the default (auto) PostgreSQL kept
-- planning some of them anew on every call (the array parameters), 10% of
-- the server's CPU under the manifest PUT load. The setting holds for the
-- triggers its statements fire too.
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_repo BIGINT;
    v_id BIGINT;
    v_current BIGINT;
    v_missing TEXT;
    v_blobs TEXT[] := string_to_array(p_blobs, E'\n');
    v_children TEXT[] := string_to_array(p_children, E'\n');
BEGIN
    -- The checks, in 0007's order; a repository that does not exist yet
    -- holds no blob, no manifest and no tag.
    SELECT id INTO v_repo FROM repositories WHERE name = p_repo;
    SELECT u.d INTO v_missing FROM unnest(v_blobs) WITH ORDINALITY AS u(d, i)
     WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb
                        WHERE rb.repository_id = v_repo AND rb.digest = u.d)
     ORDER BY u.i LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RETURN jsonb_build_object('code', 'BR001', 'message', v_missing);
    END IF;
    IF cardinality(v_children) > 0 THEN
        SELECT u.d INTO v_missing FROM unnest(v_children) WITH ORDINALITY AS u(d, i)
         WHERE NOT EXISTS (SELECT 1 FROM manifests m
                            WHERE m.repository_id = v_repo AND m.digest = u.d)
         ORDER BY u.i LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RETURN jsonb_build_object('code', 'BR002', 'message', v_missing);
        END IF;
    END IF;
    IF p_tag IS NOT NULL THEN
        SELECT manifest_id INTO v_current FROM tags WHERE repository_id = v_repo AND name = p_tag;
        IF v_current IS NULL AND NOT p_may_create THEN
            RETURN jsonb_build_object('code', 'BR003', 'message', p_tag);
        END IF;
        IF v_current IS NOT NULL AND NOT p_may_move THEN
            -- A move only if the tag points at another manifest than this one.
            SELECT id INTO v_id FROM manifests WHERE repository_id = v_repo AND digest = p_digest;
            IF v_id IS DISTINCT FROM v_current THEN
                RETURN jsonb_build_object('code', 'BR004', 'message', p_tag);
            END IF;
        END IF;
    END IF;

    -- The writes.
    IF v_repo IS NULL THEN
        INSERT INTO repositories (name, created_at) VALUES (p_repo, p_now)
            ON CONFLICT (name) DO NOTHING;
        SELECT id INTO v_repo FROM repositories WHERE name = p_repo;
    END IF;
    INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, config_digest,
                           subject_digest, annotations, payload, created_at)
    VALUES (v_repo, p_digest, p_media_type, p_artifact_type, p_size, p_config,
            p_subject, p_annotations, p_payload, p_now)
    ON CONFLICT (repository_id, digest) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        INSERT INTO manifest_blobs (manifest_id, digest)
            SELECT v_id, d FROM unnest(v_blobs) AS d ON CONFLICT DO NOTHING;
        IF cardinality(v_children) > 0 THEN
            INSERT INTO manifest_references (parent_id, child_id)
                SELECT v_id, m.id FROM unnest(v_children) AS c(d)
                  JOIN manifests m ON m.repository_id = v_repo AND m.digest = c.d
                ON CONFLICT DO NOTHING;
        END IF;
    ELSE
        SELECT id INTO v_id FROM manifests WHERE repository_id = v_repo AND digest = p_digest;
    END IF;
    IF p_tag IS NOT NULL THEN
        INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at)
        VALUES (v_repo, p_tag, v_id, p_now, p_now)
        ON CONFLICT (repository_id, name) DO UPDATE
           SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at
         WHERE tags.manifest_id <> excluded.manifest_id;
    END IF;
    RETURN NULL;
END $$;

-- A batch: a JSON array of PUTs (berth_put_manifest's arguments by name, the
-- payload in hex). Returns a JSON array as long, in order: {} for a PUT
-- stored, or its refusal. The write lock is taken once, before the first,
-- and held to the commit.
CREATE OR REPLACE FUNCTION berth_put_manifests(p_batch TEXT) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_put JSONB;
    v_results JSONB := '[]'::jsonb;
    v_refused JSONB;
BEGIN
    PERFORM pg_advisory_xact_lock(6450407435064930418);
    FOR v_put IN SELECT value FROM jsonb_array_elements(p_batch::jsonb) LOOP
        v_refused := berth_put_manifest(
            v_put->>'repo', v_put->>'digest', v_put->>'media_type', v_put->>'artifact_type',
            (v_put->>'size')::bigint, v_put->>'config', v_put->>'subject',
            v_put->>'annotations', decode(v_put->>'payload', 'hex'), (v_put->>'now')::bigint,
            v_put->>'blobs', v_put->>'children', v_put->>'tag',
            (v_put->>'may_create')::boolean, (v_put->>'may_move')::boolean);
        v_results := v_results || jsonb_build_array(coalesce(v_refused, '{}'::jsonb));
    END LOOP;
    RETURN v_results::text;
END $$;
