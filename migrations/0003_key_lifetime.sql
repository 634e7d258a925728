-- When a key is deleted by its lifetime (Tyk's session_lifetime rules, computed at each write).
-- NULL: never. A sweeper on each control-plane replica deletes due keys and streams the deletion.
ALTER TABLE keys ADD COLUMN delete_at timestamptz;
CREATE INDEX keys_delete_at ON keys (delete_at) WHERE delete_at IS NOT NULL;
