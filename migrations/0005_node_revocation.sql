-- A node's revocation is a change-log entry written in the same transaction as the registry
-- update, so every replica's tailer reads it before any later commit and fences the node's
-- streams before it could forward anything committed after the revocation (docs/sync.md).
ALTER TABLE change_log DROP CONSTRAINT change_log_kind_check;
ALTER TABLE change_log ADD CONSTRAINT change_log_kind_check
    CHECK (kind IN ('api', 'policy', 'oauth_client', 'certificate', 'session', 'node'));

