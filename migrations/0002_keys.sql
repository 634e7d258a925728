-- Keys (Tyk sessions). Only the sha256 of a key is stored; a basic-auth password is stored as a
-- bcrypt hash inside the session. Edges look keys up by hash (LookupSession).
CREATE TABLE keys (
    key_hash   text        PRIMARY KEY,
    session    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
