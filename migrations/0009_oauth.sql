-- The built-in OAuth 2.0 provider (docs/oauth.md). Clients are a resource kind streamed to every
-- edge; codes, refresh tokens and access tokens live here only, by the sha256 of their value, so
-- a code is redeemed once across every region and a token works in every region at first use.

-- The body is the client as streamed: its secret is sealed before it reaches this table.
CREATE TABLE oauth_clients (
    client_id  text        PRIMARY KEY,
    api_id     text        NOT NULL DEFAULT '',
    org_id     text        NOT NULL DEFAULT '',
    body       jsonb       NOT NULL,
    revision   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_clients_api_id ON oauth_clients (api_id);

-- Access tokens are keys (origin 'oauth') tied to their client, so deleting a client or
-- revoke_all finds them without reading every session.
ALTER TABLE keys DROP CONSTRAINT keys_origin_check;
ALTER TABLE keys ADD CONSTRAINT keys_origin_check CHECK (origin IN ('operator', 'jwt', 'oauth'));
ALTER TABLE keys ADD COLUMN oauth_client_id text;
CREATE INDEX keys_oauth_client_id ON keys (oauth_client_id) WHERE oauth_client_id IS NOT NULL;

-- Authorization codes: deleted when redeemed (DELETE ... RETURNING: one redemption wins).
CREATE TABLE oauth_codes (
    code_hash             text        PRIMARY KEY,
    client_id             text        NOT NULL,
    api_id                text        NOT NULL,
    redirect_uri          text        NOT NULL,
    -- The session the tokens get (from key_rules or the client's policy).
    session               jsonb       NOT NULL,
    scope                 text        NOT NULL DEFAULT '',
    code_challenge        text,
    code_challenge_method text,
    expires_at            timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_codes_expires_at ON oauth_codes (expires_at);

-- Refresh tokens. A rotation marks the old one used and issues one of the same family; a used
-- one presented again revokes the whole family (its access tokens included).
CREATE TABLE oauth_refresh_tokens (
    token_hash      text        PRIMARY KEY,
    client_id       text        NOT NULL,
    api_id          text        NOT NULL,
    family          uuid        NOT NULL,
    -- The access token issued with it (a key hash).
    access_key_hash text        NOT NULL,
    session         jsonb       NOT NULL,
    scope           text        NOT NULL DEFAULT '',
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family);
CREATE INDEX oauth_refresh_tokens_client_id ON oauth_refresh_tokens (client_id);
CREATE INDEX oauth_refresh_tokens_expires_at ON oauth_refresh_tokens (expires_at);
