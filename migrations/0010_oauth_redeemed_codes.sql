-- Codes already redeemed (docs/oauth.md): a code presented again revokes the tokens it was
-- redeemed for (RFC 6749 4.1.2), since one of the two presenters holds a stolen code. Kept for
-- the lifetime of the access token it gave.
CREATE TABLE oauth_redeemed_codes (
    code_hash       text        PRIMARY KEY,
    client_id       text        NOT NULL,
    access_key_hash text        NOT NULL,
    family          uuid,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX oauth_redeemed_codes_expires_at ON oauth_redeemed_codes (expires_at);
