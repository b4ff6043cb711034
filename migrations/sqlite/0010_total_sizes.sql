-- Tags sorted by size a page at a time (issue 17): a manifest's total size
-- (its payload, every manifest it lists at any depth, and the distinct blobs
-- all of them reference) is stored when the manifest is, and a tag keeps a
-- copy of its manifest's, so a page sorted by size is read in the order of
-- `tags_by_size` and cut by LIMIT/OFFSET instead of sizing every tag.
-- A manifest's total size never changes: its blobs and children are fixed
-- when it is stored, and a manifest another lists is not deleted before it.
ALTER TABLE manifests ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tags ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;

-- The sizes of the manifests already stored, as the management API computed
-- them until now.
CREATE TEMP TABLE manifest_total_sizes (root INTEGER PRIMARY KEY, bytes INTEGER NOT NULL);
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
UPDATE tags SET total_size = (SELECT total_size FROM manifests WHERE id = tags.manifest_id);
DROP TABLE manifest_total_sizes;

CREATE INDEX tags_by_size ON tags (repository_id, total_size, name);
