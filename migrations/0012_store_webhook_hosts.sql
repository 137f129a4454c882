-- The destination host of each webhook, kept next to its URL: the outbox groups due deliveries
-- by host at every claim (the per-host concurrency limit), and reading it from a column is
-- cheaper and plainer than cutting it out of the URL with a regular expression each time.
--
-- The application writes it whenever it writes a URL, from the URL it parsed and checked
-- (`url::Url::host_str`: lower-case, IPv4 in dotted form, IPv6 in brackets). Stored URLs are
-- that parser's serialisation, so the expression below, which the claim used until now, gives
-- the same host for the rows already there.
--
-- The CHECK needs no expand step: webhooks arrived in 0011, in the same unreleased version, so
-- no process of an earlier release writes webhook rows without a host.
ALTER TABLE tinydevcrm.subscriptions ADD COLUMN host text;

UPDATE tinydevcrm.subscriptions
   SET host = coalesce(lower(substring(url FROM '^[^:/?#]+://(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)')), '')
 WHERE kind = 'webhook';

ALTER TABLE tinydevcrm.subscriptions
    ADD CONSTRAINT subscriptions_webhook_host_check CHECK ((kind = 'webhook') = (host IS NOT NULL));
