-- E-mail subscriptions (issue 14): confirmation and unsubscribe links, the per-address limit
-- on confirmation messages, and the claim that gives one process one subscription's e-mail.
--
-- The links carry an HMAC over (purpose, subscription id, nonce) under a key derived from the
-- server's JWT secret (notify::links). Only the nonces are stored: without the key they
-- confirm nothing, and the outbox recomputes the link when it sends. Confirming clears the
-- confirmation nonce, so a link works once; a new confirmation (resend) replaces it, so only
-- the newest link works. `confirm_token_hash` (0011) was never written: the nonce replaces it.
ALTER TABLE tinydevcrm.subscriptions
    DROP COLUMN confirm_token_hash,
    ADD COLUMN confirm_nonce         bytea,
    ADD COLUMN confirm_expires_at    timestamptz,
    ADD COLUMN confirmation_sent_at  timestamptz,
    ADD COLUMN unsubscribe_nonce     bytea,
    ADD COLUMN unsubscribed_at       timestamptz,
    -- The e-mail drainer's claim: one process sends a subscription's mail at a time (so that
    -- at most one message goes out per interval), until email_claim_until (the lease) passes.
    ADD COLUMN email_claim           uuid,
    ADD COLUMN email_claim_until     timestamptz,
    ADD CHECK ((kind = 'email') = (unsubscribe_nonce IS NOT NULL));

-- The last confirmation message queued to each address (lower-cased), over every tenant: at
-- most one per TDC_EMAIL_CONFIRM_RESEND_SECS, so that nobody can make the service mail a
-- stranger repeatedly by creating, deleting and re-creating subscriptions.
CREATE TABLE tinydevcrm.email_confirmations (
    address      text PRIMARY KEY,
    last_sent_at timestamptz NOT NULL
);

CREATE INDEX subscriptions_email_address_idx ON tinydevcrm.subscriptions (lower(email))
    WHERE kind = 'email';
