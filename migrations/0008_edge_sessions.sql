-- Sessions made at the edge (docs/keys.md, "Sessions made at the edge"). An edge that verified a
-- JWT makes the identity's session itself and reports it (ReportSessions); the row records who
-- made it. `origin` 'operator': a key written through the management API; 'jwt': an edge-made
-- session, which reports may replace but never an operator's key.
ALTER TABLE keys ADD COLUMN origin text NOT NULL DEFAULT 'operator'
    CHECK (origin IN ('operator', 'jwt'));
-- An operator's DELETE of an edge-made session keeps the row as a tombstone (delete_at NULL, so
-- the lifetime sweeper never removes it): edges refuse tokens issued at or before revoked_at, and
-- a late report cannot bring the session back.
ALTER TABLE keys ADD COLUMN revoked_at timestamptz;
-- The node whose report last wrote the row (NULL for operator keys).
ALTER TABLE keys ADD COLUMN reported_by uuid;

-- DELETE /tyk/cache/jwks[/{api_id}]: a cache flush is streamed to every edge in revision order,
-- as an event (never part of a snapshot or the configuration hash).
ALTER TABLE change_log DROP CONSTRAINT change_log_kind_check;
ALTER TABLE change_log ADD CONSTRAINT change_log_kind_check
    CHECK (kind IN ('api', 'policy', 'oauth_client', 'certificate', 'session', 'node', 'cache'));
