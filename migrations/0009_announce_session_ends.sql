-- A session that ends outside the API (revoked or deleted by hand in SQL, or deleted with its
-- user) is announced like a logout, so that no process keeps trusting what it
-- remembered of it (auth::sessions). The API's own revocations send the same notice in the
-- same transaction; PostgreSQL delivers identical notices of one transaction once.
CREATE FUNCTION tinydevcrm.announce_session_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tdc_events', 'session ' || OLD.session_id::text || ' revoked');
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_announce_delete
    AFTER DELETE ON tinydevcrm.sessions
    FOR EACH ROW EXECUTE FUNCTION tinydevcrm.announce_session_end();

CREATE TRIGGER sessions_announce_end
    AFTER UPDATE OF revoked_at, user_id ON tinydevcrm.sessions
    FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL
          OR NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION tinydevcrm.announce_session_end();
