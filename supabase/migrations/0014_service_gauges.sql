-- The figures GET /metrics reports as gauges, read in one call at each scrape: open
-- sessions, pence owed (ended sessions whose payment failed or waits for the customer,
-- less what a hold captured), e-mails waiting to be sent and dead letters. Each count
-- reads a partial index, so a scrape stays cheap however many sessions are settled.

create index if not exists pod_sessions_owed on pod_sessions (id)
    where payment_status in ('failed', 'requires_action');

create index if not exists email_outbox_dead on email_outbox (id)
    where dead_at is not null;

create or replace function qwip_service_gauges()
returns table (
    open_sessions bigint,
    owed_pence bigint,
    emails_waiting bigint,
    emails_dead bigint
)
language sql
stable
set search_path = public
as $$
    select
        (select count(*) from pod_sessions where end_time is null),
        (select coalesce(sum(greatest(coalesce(cost_pence, 0) - coalesce(captured_pence, 0), 0)), 0)
            from pod_sessions
            where payment_status in ('failed', 'requires_action') and end_time is not null),
        (select count(*) from email_outbox where sent_at is null and dead_at is null),
        (select count(*) from email_outbox where dead_at is not null);
$$;

select qwip_service_only(array['qwip_service_gauges()']);
