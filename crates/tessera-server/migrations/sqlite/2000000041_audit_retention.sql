-- The audit trail is purged by age (audit.retention): find old events
-- without reading the whole table.
CREATE INDEX IF NOT EXISTS audit_events_created ON audit_events (created_at);
