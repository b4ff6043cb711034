-- Blobs an upload is verifying against (an upload of a blob the store
-- already holds is hashed, not written: the held blob must not be collected
-- meanwhile). Garbage collection does not review a pinned blob; a pin goes
-- when its upload is done, or at `until_ms` if its replica died.
CREATE TABLE gc_blob_pins (
    id        TEXT    PRIMARY KEY,
    digest    TEXT    NOT NULL,
    until_ms  INTEGER NOT NULL
);
CREATE INDEX gc_blob_pins_digest ON gc_blob_pins (digest);
