-- APIs a node answers 503 because their definition enables an authentication method the node
-- does not implement ("<api_id>: <method>"), as reported in its ACKs.
ALTER TABLE nodes ADD COLUMN unserved_apis text[] NOT NULL DEFAULT '{}';
