-- Tags sorted by size a page at a time (issue 17): a manifest's total size
-- (its payload, every manifest it lists at any depth, and the distinct blobs
-- all of them reference) is stored when the manifest is, and a tag keeps a
-- copy of its manifest's, so a page sorted by size is read in the order of
-- `tags_by_size` and cut by LIMIT/OFFSET instead of sizing every tag.
-- A manifest's total size never changes: its blobs and children are fixed
-- when it is stored, and a manifest another lists is not deleted before it.
ALTER TABLE manifests ADD COLUMN total_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tags ADD COLUMN total_size BIGINT NOT NULL DEFAULT 0;

-- The sizes of the manifests already stored, as the management API computed
-- them until now.
CREATE TEMP TABLE manifest_total_sizes (root BIGINT PRIMARY KEY, bytes BIGINT NOT NULL);
INSERT INTO manifest_total_sizes (root, bytes)
WITH RECURSIVE tree(root, id) AS (
    SELECT id, id FROM manifests
    UNION
    SELECT tree.root, r.child_id FROM manifest_references r JOIN tree ON r.parent_id = tree.id
),
parts(root, bytes) AS (
    SELECT tree.root, m.size FROM tree JOIN manifests m ON m.id = tree.id
    UNION ALL
    SELECT used.root, b.size
      FROM (SELECT DISTINCT tree.root, mb.digest FROM tree
              JOIN manifest_blobs mb ON mb.manifest_id = tree.id) used
      JOIN blobs b ON b.digest = used.digest
)
SELECT root, SUM(bytes) FROM parts GROUP BY root;
UPDATE manifests SET total_size = (SELECT bytes FROM manifest_total_sizes WHERE root = manifests.id);
-- Without the tag version bump of each row (a million tags of one
-- repository would update its row a million times in this transaction, which
-- PostgreSQL does in quadratic time); a bump per repository instead. Disabled
-- only inside this transaction: no other session sees it.
ALTER TABLE tags DISABLE TRIGGER tags_version_update;
UPDATE tags SET total_size = (SELECT total_size FROM manifests WHERE id = tags.manifest_id);
ALTER TABLE tags ENABLE TRIGGER tags_version_update;
UPDATE repositories SET tags_version = tags_version + 1;
DROP TABLE manifest_total_sizes;

CREATE INDEX tags_by_size ON tags (repository_id, total_size, name);

-- berth_put_manifest (0008) stores the total size with the manifest and
-- copies it to the tag; signature and answer unchanged, so a replica still
-- on an older binary stores sizes too once this migration ran.
-- One PUT, under the write lock its caller holds: NULL when stored, or the
-- refusal ({"code": SQLSTATE, "message": ...}; the codes of 0007: BR001 a
-- blob the repository lacks, BR002 a child manifest it lacks, BR003 creating
-- the tag is refused, BR004 moving it is refused) with nothing written.
CREATE OR REPLACE FUNCTION berth_put_manifest(
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
    v_total BIGINT;
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
        IF cardinality(v_children) = 0 THEN
            v_total := p_size + COALESCE((SELECT sum(size) FROM blobs WHERE digest = ANY (v_blobs)), 0);
        ELSE
            WITH RECURSIVE tree(id) AS (
                SELECT v_id
                UNION
                SELECT r.child_id FROM manifest_references r JOIN tree ON r.parent_id = tree.id
            )
            SELECT (SELECT sum(m.size) FROM tree JOIN manifests m ON m.id = tree.id)
                   + COALESCE((SELECT sum(b.size) FROM blobs b
                                WHERE b.digest IN (SELECT mb.digest FROM tree
                                                     JOIN manifest_blobs mb ON mb.manifest_id = tree.id)), 0)
              INTO v_total;
        END IF;
        UPDATE manifests SET total_size = v_total WHERE id = v_id;
    ELSE
        SELECT id, total_size INTO v_id, v_total FROM manifests
         WHERE repository_id = v_repo AND digest = p_digest;
    END IF;
    IF p_tag IS NOT NULL THEN
        INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at, total_size)
        VALUES (v_repo, p_tag, v_id, p_now, p_now, v_total)
        ON CONFLICT (repository_id, name) DO UPDATE
           SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at,
               total_size = excluded.total_size
         WHERE tags.manifest_id <> excluded.manifest_id;
    END IF;
    RETURN NULL;
END $$;
