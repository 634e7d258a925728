-- Portcullis control-plane schema. Every configuration write commits its row, one change_log row
-- and the revision counter in one transaction (DESIGN.md §5).

-- Revisions come from this single row, updated as the last statement of each write transaction:
-- the row lock is held until commit, so revisions become visible in commit order and a reader of
-- `revision > n` never skips one (a sequence would not guarantee that).
CREATE TABLE revision_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint  NOT NULL
);
INSERT INTO revision_counter (singleton, revision) VALUES (true, 0);

CREATE TABLE apis (
    api_id      text        PRIMARY KEY,
    domain      text        NOT NULL DEFAULT '',
    listen_path text        NOT NULL,
    tags        text[]      NOT NULL DEFAULT '{}',
    definition  jsonb       NOT NULL,
    revision    bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT apis_domain_listen_path_key UNIQUE (domain, listen_path)
);

CREATE TABLE policies (
    id         text        PRIMARY KEY,
    definition jsonb       NOT NULL,
    revision   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per committed revision, dense (a rolled-back transaction also rolls back its counter
-- update). `tags`/`prev_tags` are the node-segmentation tags after/before the change: NULL means
-- the resource does not exist on that side, '{}' means every group sees it.
CREATE TABLE change_log (
    revision     bigint      PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('api', 'policy', 'oauth_client', 'certificate', 'session')),
    resource_id  text        NOT NULL,
    op           text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    body         jsonb,
    tags         text[],
    prev_tags    text[],
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX change_log_committed_at ON change_log (committed_at);

-- Node CA: one row; the private key is sealed with a key derived from the shared secret.
CREATE TABLE node_ca (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    certificate_pem text        NOT NULL,
    key_sealed      bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Bootstrap tokens "<id>.<secret>": only sha256(secret) is stored.
CREATE TABLE bootstrap_tokens (
    id          text        PRIMARY KEY,
    secret_hash bytea       NOT NULL,
    node_group  text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    expires_at  timestamptz NOT NULL,
    max_uses    integer,
    uses        integer     NOT NULL DEFAULT 0,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    id                 uuid        PRIMARY KEY,
    name               text        NOT NULL,
    node_group         text        NOT NULL,
    version            text        NOT NULL,
    capabilities       text[]      NOT NULL DEFAULT '{}',
    bootstrap_token_id text,
    cert_serial        text        NOT NULL,
    cert_expires_at    timestamptz NOT NULL,
    revoked_at         timestamptz,
    connected          boolean     NOT NULL DEFAULT false,
    cp_replica         text,
    acked_revision     bigint      NOT NULL DEFAULT 0,
    acked_hash         text        NOT NULL DEFAULT '',
    acked_at           timestamptz,
    last_nack          jsonb,
    last_seen          timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_group ON nodes (node_group);
