-- E-mail subscriptions against a hostile tenant (issue 14, second pass).
--
-- Every confirmation message queued (and every attempt to subscribe a suppressed address),
-- with its tenant and a hash of the normalised address (notify::recipient::address_hash:
-- lower-cased, +tag and dots of the local part dropped). It outlives the subscription, so
-- deleting and re-creating one resets nothing. Three limits read it: a tenant's messages per
-- rolling hour (TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR), one per (tenant, address) per
-- TDC_EMAIL_CONFIRM_RESEND_SECS, and an address's messages per rolling hour over every
-- tenant (TDC_EMAIL_CONFIRMATIONS_PER_ADDRESS_PER_HOUR). Rows older than the longest window
-- are deleted by the e-mail drainer. It replaces email_confirmations (0013), which kept one
-- row per lower-cased address that any tenant's request would renew; that table stays until
-- no process of the previous release runs (expand, then contract in a later migration).

CREATE TABLE tinydevcrm.email_confirmation_log (
    user_id      uuid        NOT NULL,
    address_hash bytea       NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_confirmation_log_user_idx ON tinydevcrm.email_confirmation_log (user_id, sent_at);
CREATE INDEX email_confirmation_log_address_idx
    ON tinydevcrm.email_confirmation_log (address_hash, sent_at);

-- Addresses whose recipient refused mail from this service (an unsubscribe link followed):
-- no tenant can subscribe them again. Only the hash of the normalised address is kept.
CREATE TABLE tinydevcrm.email_suppressions (
    address_hash  bytea PRIMARY KEY,
    suppressed_at timestamptz NOT NULL DEFAULT now()
);
