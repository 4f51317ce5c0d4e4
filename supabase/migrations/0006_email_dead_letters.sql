-- Dead letters: an e-mail that cannot be composed, or that the mail server keeps refusing,
-- is set aside (dead_at) once, with the reason (last_error), instead of being offered
-- again for ever; the operator is told in the same transaction.

alter table email_outbox add column if not exists dead_at timestamptz;

create index if not exists email_outbox_live_due on email_outbox (next_attempt_at)
    where sent_at is null and dead_at is null;


-- As in 0001, but a dead letter is never handed out again.
create or replace function qwip_claim_emails(p_limit integer, p_lease_seconds integer)
returns setof email_outbox
language sql
set search_path = public
as $$
    update email_outbox
    set locked_until = now() + make_interval(secs => p_lease_seconds),
        attempts = attempts + 1
    where id in (
        select id from email_outbox
        where sent_at is null
          and dead_at is null
          and next_attempt_at <= now()
          and (locked_until is null or locked_until < now())
        order by id
        limit p_limit
        for update skip locked
    )
    returning *;
$$;


-- Set an unsent e-mail aside for good and queue the operator's notice of it (a message of
-- the queue's JSON shape, or null), once: true for the caller that did. A notice about a
-- dead letter ('dead_letter:…') that dies itself queues no further notice, so a broken
-- operator address cannot feed a loop.
create or replace function qwip_dead_letter_email(
    p_email_id bigint,
    p_error text,
    p_notice jsonb
)
returns boolean
language plpgsql
set search_path = public
as $$
declare
    v_dedupe_key text;
begin
    update email_outbox
    set dead_at = now(),
        locked_until = null,
        last_error = left(p_error, 500)
    where id = p_email_id
      and sent_at is null
      and dead_at is null
    returning dedupe_key into v_dedupe_key;
    if not found then
        return false;
    end if;
    if p_notice is not null and v_dedupe_key not like 'dead\_letter:%' then
        perform qwip_queue_emails(jsonb_build_array(p_notice));
    end if;
    return true;
end;
$$;


-- Only the service may call it (as 0001's qwip_service_only does, written out here).
revoke all on function qwip_dead_letter_email(bigint, text, jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function qwip_dead_letter_email(bigint, text, jsonb) from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on function qwip_dead_letter_email(bigint, text, jsonb) from authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function qwip_dead_letter_email(bigint, text, jsonb) to service_role;
    end if;
end;
$$;
