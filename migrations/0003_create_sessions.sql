-- Sessions: one per successful login, i.e. one refresh-token family. Only the newest refresh
-- token of a family (current_refresh_jti) is valid; presenting an older one means it was
-- stolen or replayed, and the whole session is revoked. Access tokens carry the session id,
-- so revoking a session stops its access tokens on every process at once.
CREATE TABLE tinydevcrm.sessions (
    session_id          uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    current_refresh_jti uuid NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_refreshed_at   timestamptz,
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text CONSTRAINT sessions_revoked_reason_check
                        CHECK (revoked_reason IN ('logout', 'refresh_reuse'))
);
CREATE INDEX sessions_user_id_idx ON tinydevcrm.sessions (user_id);
