-- Web UI sign-ins and the key of the UI's CSRF tokens, in the database so
-- that every replica knows them (a browser load-balanced to another replica
-- stays signed in, and its forms' tokens verify there).
-- A session is found by the SHA-256 of its id (the cookie value), never the
-- id itself; `proof` is what the session keeps of the sign-in instead of the
-- secret (the secret's hash, or an external identity), as JSON.
CREATE TABLE ui_sessions (
    id_hash     BLOB    PRIMARY KEY,
    user_name   TEXT    NOT NULL,
    proof       TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);

-- Keys made once, by the first replica that needs them.
CREATE TABLE ui_keys (
    name  TEXT PRIMARY KEY,
    key   BLOB NOT NULL
);
