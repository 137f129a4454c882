-- API keys: long-lived, scoped credentials for dashboards and services (auth::keys). Only the
-- SHA-256 of a key is stored (the key holds 256 random bits, so a fast hash is as strong as a
-- slow one against guessing) with a short, non-secret prefix to tell keys apart in a listing.
-- A key is revoked by deleting its row.
CREATE TABLE tinydevcrm.api_keys (
    key_id                uuid PRIMARY KEY,
    user_id               uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    name                  text NOT NULL CONSTRAINT api_keys_name_length
                          CHECK (length(name) BETWEEN 1 AND 100),
    prefix                text NOT NULL,
    key_hash              bytea NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE
                          CONSTRAINT api_keys_key_hash_length CHECK (length(key_hash) = 32),
    scopes                text[] NOT NULL,
    rate_limit_per_minute integer CONSTRAINT api_keys_rate_limit_positive
                          CHECK (rate_limit_per_minute > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    last_used_at          timestamptz,
    expires_at            timestamptz
);
CREATE INDEX api_keys_user_id_idx ON tinydevcrm.api_keys (user_id);

-- A deleted key (revoked through the API, by hand, or with its user) is announced like a
-- revoked session, under its key id: every process forgets what it remembered of it and ends
-- its streams (channels::hub). Key ids and session ids are both random UUIDs, so they never
-- name each other.
CREATE FUNCTION tinydevcrm.announce_key_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tdc_events', 'session ' || OLD.key_id::text || ' revoked');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_announce_delete
    AFTER DELETE ON tinydevcrm.api_keys
    FOR EACH ROW EXECUTE FUNCTION tinydevcrm.announce_key_end();

-- What a stream may be held by: a session or a key, each with whether it is still good. The
-- hub re-reads open streams' principals here (a revocation notice lost while it reconnected).
CREATE VIEW tinydevcrm.stream_principals AS
    SELECT session_id AS principal_id, revoked_at IS NULL AS live, expires_at
    FROM tinydevcrm.sessions
    UNION ALL
    SELECT key_id, true, coalesce(expires_at, 'infinity')
    FROM tinydevcrm.api_keys;
