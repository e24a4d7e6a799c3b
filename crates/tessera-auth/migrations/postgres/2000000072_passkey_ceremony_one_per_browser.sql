-- A browser has at most one pending web ceremony of each kind: its new
-- ceremony replaces the pending one in one statement (an upsert on this
-- index), so that a burst of begins from one browser, on any number of
-- instances at once, leaves one row rather than one per begin. The web
-- ceremonies pending at the upgrade (five minutes' worth at most) are
-- dropped, so the index can be built over rows that may repeat a binding;
-- a browser that had one begins again. API ceremonies (no binding) are
-- not affected.
DELETE FROM passkey_ceremonies WHERE binding <> '';
DROP INDEX IF EXISTS passkey_ceremonies_binding;
CREATE UNIQUE INDEX IF NOT EXISTS passkey_ceremonies_one_per_browser
    ON passkey_ceremonies (kind, binding) WHERE binding <> '';
