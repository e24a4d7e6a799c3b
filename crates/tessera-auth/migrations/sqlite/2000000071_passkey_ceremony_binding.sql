-- The browser a web ceremony belongs to: a digest (an HMAC under the
-- server's CSRF key) of the browser's pre-session secret, the HttpOnly
-- cookie the login form's CSRF token is bound to. Finish takes a ceremony
-- only with the binding it was begun with, so a ceremony ID begun in one
-- browser finishes in no other, nor through the API; and a browser's new
-- ceremony replaces its pending one of the same kind instead of adding a
-- row. Empty for the ceremonies of API clients, which have no cookie.
ALTER TABLE passkey_ceremonies ADD COLUMN binding TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS passkey_ceremonies_binding ON passkey_ceremonies (kind, binding);
