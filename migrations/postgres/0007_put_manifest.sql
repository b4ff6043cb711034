-- Manifest PUTs on PostgreSQL, several in one statement (one round trip,
-- one commit): berth_put_manifest does the same steps, in the same order, as
-- the statements metadata/manifests.rs sends one by one on SQLite (where a
-- statement costs no round trip), with the same outcome, which the metadata
-- tests check on both backends; berth_put_manifests runs a batch of them,
-- each in a subtransaction of its own, so one refused PUT takes nothing of
-- the others with it. A replica batches the PUTs that arrive while its
-- previous batch runs (metadata/manifests.rs, PutBatcher).
--
-- berth_put_manifest takes the write lock first, as every write transaction
-- does (db::Dialect::write_lock). Lists arrive joined by newlines (digests
-- hold none; the Any driver binds no arrays). The caller's tag rules arrive
-- as their answers for a create and for a move of the tag. Refusals are
-- errors with berth's own SQLSTATEs, the message naming what was refused:
--   BR001 a blob the repository lacks     BR002 a child manifest it lacks
--   BR003 creating the tag is refused     BR004 moving the tag is refused
CREATE FUNCTION berth_put_manifest(
    p_repo TEXT, p_digest TEXT, p_media_type TEXT, p_artifact_type TEXT, p_size BIGINT,
    p_config TEXT, p_subject TEXT, p_annotations TEXT, p_payload BYTEA, p_now BIGINT,
    p_blobs TEXT, p_children TEXT, p_tag TEXT, p_may_create BOOLEAN, p_may_move BOOLEAN)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_repo BIGINT;
    v_id BIGINT;
    v_current BIGINT;
    v_missing TEXT;
    v_blobs TEXT[] := string_to_array(p_blobs, E'\n');
    v_children TEXT[] := string_to_array(p_children, E'\n');
BEGIN
    PERFORM pg_advisory_xact_lock(6450407435064930418);
    SELECT id INTO v_repo FROM repositories WHERE name = p_repo;
    IF v_repo IS NULL THEN
        INSERT INTO repositories (name, created_at) VALUES (p_repo, p_now)
            ON CONFLICT (name) DO NOTHING;
        SELECT id INTO v_repo FROM repositories WHERE name = p_repo;
    END IF;
    SELECT u.d INTO v_missing FROM unnest(v_blobs) WITH ORDINALITY AS u(d, i)
     WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb
                        WHERE rb.repository_id = v_repo AND rb.digest = u.d)
     ORDER BY u.i LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BR001', MESSAGE = v_missing;
    END IF;
    SELECT u.d INTO v_missing FROM unnest(v_children) WITH ORDINALITY AS u(d, i)
     WHERE NOT EXISTS (SELECT 1 FROM manifests m
                        WHERE m.repository_id = v_repo AND m.digest = u.d)
     ORDER BY u.i LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'BR002', MESSAGE = v_missing;
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
        INSERT INTO manifest_references (parent_id, child_id)
            SELECT v_id, m.id FROM unnest(v_children) AS c(d)
              JOIN manifests m ON m.repository_id = v_repo AND m.digest = c.d
            ON CONFLICT DO NOTHING;
    ELSE
        SELECT id INTO v_id FROM manifests WHERE repository_id = v_repo AND digest = p_digest;
    END IF;
    IF p_tag IS NOT NULL THEN
        SELECT manifest_id INTO v_current FROM tags WHERE repository_id = v_repo AND name = p_tag;
        IF v_current IS NULL AND NOT p_may_create THEN
            RAISE EXCEPTION USING ERRCODE = 'BR003', MESSAGE = p_tag;
        ELSIF v_current <> v_id AND NOT p_may_move THEN
            RAISE EXCEPTION USING ERRCODE = 'BR004', MESSAGE = p_tag;
        END IF;
        INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at)
        VALUES (v_repo, p_tag, v_id, p_now, p_now)
        ON CONFLICT (repository_id, name) DO UPDATE
           SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at
         WHERE tags.manifest_id <> excluded.manifest_id;
    END IF;
    RETURN v_id;
END $$;

-- A batch: a JSON array of PUTs (the arguments above by name, the payload in
-- hex). Returns a JSON array as long, in order: {} for a PUT stored, or
-- {"code": SQLSTATE, "message": ...} for one refused or failed (rolled back
-- alone). The write lock is taken once, before the first, and held to the
-- commit.
CREATE FUNCTION berth_put_manifests(p_batch TEXT) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_put JSONB;
    v_results JSONB := '[]'::jsonb;
    v_code TEXT;
    v_message TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(6450407435064930418);
    FOR v_put IN SELECT value FROM jsonb_array_elements(p_batch::jsonb) LOOP
        BEGIN
            PERFORM berth_put_manifest(
                v_put->>'repo', v_put->>'digest', v_put->>'media_type', v_put->>'artifact_type',
                (v_put->>'size')::bigint, v_put->>'config', v_put->>'subject',
                v_put->>'annotations', decode(v_put->>'payload', 'hex'), (v_put->>'now')::bigint,
                v_put->>'blobs', v_put->>'children', v_put->>'tag',
                (v_put->>'may_create')::boolean, (v_put->>'may_move')::boolean);
            v_results := v_results || '[{}]'::jsonb;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_code = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            v_results := v_results || jsonb_build_array(
                jsonb_build_object('code', v_code, 'message', v_message));
        END;
    END LOOP;
    RETURN v_results::text;
END $$;
