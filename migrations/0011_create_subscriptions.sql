-- Notifications on channel events (webhooks, e-mail) and their outbox.
--
-- A subscription belongs to a channel (and its user). Every event appended to a channel writes
-- one delivery per subscription of that channel that is active or paused, in the event's own
-- transaction (the trigger below): an event that committed always has its deliveries, a
-- refresh that rolled back has none. A delivery carries its own copy of the event's JSON, so
-- event retention cannot take a body from a delivery still being retried.
--
-- Processes claim due deliveries with FOR UPDATE SKIP LOCKED and push next_attempt_at past the
-- attempt's timeout as a lease: a process killed in the middle leaves the delivery due again
-- once the lease has passed, and another process sends it (at least once).
CREATE TABLE tinydevcrm.subscriptions (
    subscription_id       uuid PRIMARY KEY,
    user_id               uuid NOT NULL REFERENCES tinydevcrm.users (user_id) ON DELETE CASCADE,
    channel_id            uuid NOT NULL REFERENCES tinydevcrm.channels (channel_id) ON DELETE CASCADE,
    kind                  text NOT NULL CHECK (kind IN ('webhook', 'email')),
    description           text,
    -- Webhooks: where, and the signing secrets (`whsec_...`). During a rotation the previous
    -- secret keeps signing alongside the new one until previous_secret_until.
    url                   text,
    secret                text,
    previous_secret       text,
    previous_secret_until timestamptz,
    -- E-mail: the address, which receives nothing until confirmed (the token is stored hashed).
    email                 text,
    confirm_token_hash    bytea,
    confirmed_at          timestamptz,
    last_sent_at          timestamptz,
    -- active: delivered; paused: deliveries are written and held until resumed; disabled (by a
    -- 410 Gone or by failing for too long, reason kept): no new deliveries.
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason       text,
    failing_since         timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'webhook') = (url IS NOT NULL AND secret IS NOT NULL)),
    CHECK ((kind = 'email') = (email IS NOT NULL))
);
CREATE INDEX subscriptions_channel_idx ON tinydevcrm.subscriptions (channel_id, kind, created_at);
CREATE INDEX subscriptions_user_idx ON tinydevcrm.subscriptions (user_id, kind);

CREATE TABLE tinydevcrm.deliveries (
    -- Also the `webhook-id` header: stable across retries and manual redeliveries.
    delivery_id      uuid PRIMARY KEY,
    subscription_id  uuid NOT NULL REFERENCES tinydevcrm.subscriptions (subscription_id) ON DELETE CASCADE,
    channel_id       uuid NOT NULL,
    -- The event's sequence number; NULL for a test delivery.
    seq              bigint,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_latency_ms  integer,
    last_response    text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX deliveries_due_idx ON tinydevcrm.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_subscription_idx ON tinydevcrm.deliveries (subscription_id, created_at DESC, delivery_id);
CREATE INDEX deliveries_finished_idx ON tinydevcrm.deliveries (finished_at) WHERE finished_at IS NOT NULL;

CREATE FUNCTION tinydevcrm.enqueue_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tinydevcrm.deliveries (delivery_id, subscription_id, channel_id, seq, payload)
    SELECT gen_random_uuid(), s.subscription_id, NEW.channel_id, NEW.seq, NEW.data
      FROM tinydevcrm.subscriptions s
     WHERE s.channel_id = NEW.channel_id
       AND s.status IN ('active', 'paused')
       AND (s.kind = 'webhook' OR s.confirmed_at IS NOT NULL);
    IF FOUND THEN
        PERFORM pg_notify('tdc_events', 'deliveries');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_enqueue_deliveries
    AFTER INSERT ON tinydevcrm.events
    FOR EACH ROW EXECUTE FUNCTION tinydevcrm.enqueue_deliveries();
