-- The serial that authenticated a node's last renewal. If the renewal's answer was lost, the node
-- still holds that certificate; it may use it to renew again (and for nothing else).
ALTER TABLE nodes ADD COLUMN prev_cert_serial text NOT NULL DEFAULT '';
