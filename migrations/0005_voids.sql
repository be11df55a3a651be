-- Voided usage events (`meter usage void`). The event stays in the raw log (audit); its value
-- was subtracted from its attributed bucket, whose version was raised so that the reporter sends
-- the negative delta. One row per voided event: a second void of the same event is a no-op.
CREATE TABLE usage_voids (
    tenant             text        NOT NULL,
    event_id           text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    value              numeric     NOT NULL,
    event_time         timestamptz NOT NULL,
    subscription_item  text        NOT NULL,
    bucket_start       timestamptz NOT NULL,
    voided_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, event_id)
);
