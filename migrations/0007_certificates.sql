-- The certificate store (Tyk's /tyk/certs). `body` is the record streamed to edges; its private
-- key, if any, is already sealed (sealed:v1:…, docs/security.md): no plaintext key reaches a row.
CREATE TABLE certificates (
    id         text        PRIMARY KEY,
    org_id     text        NOT NULL DEFAULT '',
    body       jsonb       NOT NULL,
    revision   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_org_id ON certificates (org_id);
