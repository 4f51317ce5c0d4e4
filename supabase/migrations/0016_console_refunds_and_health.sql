-- The operator's console and CLI learn what refunds, disputes, Seam's events, backup codes
-- and reminders record (0010 to 0012 were built beside 0013): sessions filtered by refunded
-- or disputed, a session's refunds one by one, and the pence refunded by day.
-- Idempotent, like the files before it.

-- qwip_list_sessions of 0013, with two more filters (refunded: some pence refunded or being
-- refunded at Stripe; disputed: a dispute was opened) and the facts of its timeline that
-- later files record: refunded pence, the dispute, the reminder, the backup code (and when
-- it was handed out: its e-mails are queued in the same transaction) and the unlocks.
drop function if exists qwip_list_sessions(boolean, boolean, timestamptz, text, uuid, integer);

create or replace function qwip_list_sessions(
    p_open boolean,
    p_owed boolean,
    p_refunded boolean,
    p_disputed boolean,
    p_since timestamptz,
    p_email text,
    p_session_id uuid,
    p_limit integer
)
returns table (
    id uuid,
    pod_id bigint,
    pod_name text,
    pod_address text,
    seam_device_id text,
    user_email text,
    start_time timestamptz,
    end_time timestamptz,
    price_per_minute text,
    free_minutes integer,
    currency text,
    stripe_customer_id text,
    stripe_payment_method text,
    setup_intent_id text,
    access_code text,
    access_code_id text,
    access_code_status text,
    cost_pence integer,
    payment_intent_id text,
    payment_status text,
    payment_error text,
    now timestamptz,
    hold_payment_intent_id text,
    hold_pence integer,
    captured_pence integer,
    released_pence integer,
    code_set_at timestamptz,
    settled_at timestamptz,
    no_charge_reason text,
    refunded_pence integer,
    disputed_at timestamptz,
    dispute_id text,
    reminded_at timestamptz,
    backup_access_code_id text,
    backup_code_at timestamptz,
    first_unlocked_at timestamptz,
    unlock_count integer
)
language sql
stable
set search_path = public
as $$
    select s.id, s.pod_id, p.name, p.address, p.seam_device_id, s.user_email, s.start_time,
           s.end_time, s.price_per_minute::text, s.free_minutes, s.currency,
           s.stripe_customer_id, s.stripe_payment_method, s.setup_intent_id, s.access_code,
           s.access_code_id, s.access_code_status, s.cost_pence, s.payment_intent_id,
           s.payment_status, s.payment_error, now(), s.hold_payment_intent_id, s.hold_pence,
           s.captured_pence, s.released_pence, s.code_set_at, s.settled_at, s.no_charge_reason,
           s.refunded_pence, s.disputed_at, s.dispute_id, s.reminded_at,
           s.backup_access_code_id,
           case when s.backup_access_code_id is not null then (
               select min(e.created_at) from email_outbox e
               where e.dedupe_key in ('backup_code:' || s.id::text,
                                      'backup_code_operator:' || s.id::text)
           ) end,
           u.first_unlocked_at, coalesce(u.unlock_count, 0)
    from pod_sessions s
    join pods p on p.id = s.pod_id
    left join session_unlocks u on u.session_id = s.id
    where (not p_open or s.end_time is null)
      and (not p_owed or s.payment_status in ('failed', 'requires_action'))
      and (not p_refunded or s.refunded_pence > 0)
      and (not p_disputed or s.disputed_at is not null)
      and (p_since is null or s.start_time >= p_since)
      and (p_email is null or lower(s.user_email) = lower(p_email))
      and (p_session_id is null or s.id = p_session_id)
    order by s.start_time desc, s.id
    limit p_limit;
$$;


-- A session's refunds, oldest first: the operator's (a request id: from the CLI or the
-- console) and those made in Stripe's dashboard (none), in every state.
create or replace function qwip_list_session_refunds(p_session_id uuid)
returns table (
    amount_pence integer,
    state text,
    reason text,
    by_operator boolean,
    stripe_refund_id text,
    created_at timestamptz
)
language sql
stable
set search_path = public
as $$
    select r.amount_pence, r.state, r.reason, r.request_id is not null, r.stripe_refund_id,
           r.created_at
    from session_refunds r
    where r.session_id = p_session_id
    order by r.created_at, r.id;
$$;


-- The pence refunded by day (in p_timezone) since p_since: refunds made that day, whatever
-- day their session was, that count as refunded (pending or succeeded at Stripe).
create or replace function qwip_refunds_by_day(p_since timestamptz, p_timezone text)
returns table (day date, refunded_pence bigint)
language sql
stable
set search_path = public
as $$
    select (r.created_at at time zone p_timezone)::date, sum(r.amount_pence)::bigint
    from session_refunds r
    where r.created_at >= p_since and r.state in ('pending', 'succeeded')
    group by 1
    order by 1;
$$;


select qwip_service_only(array[
    'qwip_list_sessions(boolean,boolean,boolean,boolean,timestamptz,text,uuid,integer)',
    'qwip_list_session_refunds(uuid)',
    'qwip_refunds_by_day(timestamptz,text)'
]);
