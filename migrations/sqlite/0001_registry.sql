-- The registry's metadata. Times are Unix milliseconds (UTC).
-- Kept to SQL that PostgreSQL also accepts, bar the WITHOUT ROWID storage hints.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Every committed blob, global and content-addressed.
CREATE TABLE blobs (
    digest      TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Which repository may see which blob (distribution's per-repository links).
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT    NOT NULL REFERENCES blobs (digest),
    linked_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    id             INTEGER PRIMARY KEY,
    repository_id  INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT    NOT NULL,
    media_type     TEXT    NOT NULL,
    artifact_type  TEXT,
    size           INTEGER NOT NULL,
    config_digest  TEXT,
    subject_digest TEXT,
    annotations    TEXT,
    payload        BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repository_id, subject_digest);

-- Image manifest -> config and layer blobs.
CREATE TABLE manifest_blobs (
    manifest_id INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    digest      TEXT    NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (manifest_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifest_blobs_digest ON manifest_blobs (digest);

-- Index / manifest list -> the manifests it lists.
CREATE TABLE manifest_references (
    parent_id INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    child_id  INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;
CREATE INDEX manifest_references_child ON manifest_references (child_id);

CREATE TABLE tags (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    manifest_id   INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_manifest ON tags (manifest_id);

-- Uploads in progress; their bytes are in the blob store's staging area.
CREATE TABLE uploads (
    id            TEXT    PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL
);
