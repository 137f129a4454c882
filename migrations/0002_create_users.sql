-- Accounts. An e-mail is unique whatever its case; plus-addressed variants are distinct users.
CREATE TABLE tinydevcrm.users (
    user_id        uuid PRIMARY KEY,
    primary_email  text NOT NULL CONSTRAINT users_primary_email_length CHECK (length(primary_email) <= 254),
    password_hash  text NOT NULL,
    tenant_role    text NOT NULL CONSTRAINT users_tenant_role_key UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_primary_email_key ON tinydevcrm.users (lower(primary_email));
