-- The operator's console and CLI (issue 19): a session's whole story and the money, read
-- from what the service already records, plus the few facts nothing recorded before.
-- Idempotent, like the files before it.

-- When the lock said it had the code, and when the payment reached its outcome: the
-- timeline's times. A trigger notes them, so that no function that changes a session
-- (nor a later release's version of one) has to remember to.
alter table pod_sessions add column if not exists code_set_at timestamptz;
alter table pod_sessions add column if not exists settled_at timestamptz;
-- Why the operator ended the session without charge (null: charged as usual).
alter table pod_sessions add column if not exists no_charge_reason text;

create or replace function qwip_note_session_times()
returns trigger
language plpgsql
set search_path = public
as $$
begin
    if new.access_code_status = 'set' and old.access_code_status is distinct from 'set' then
        new.code_set_at := coalesce(new.code_set_at, now());
    end if;
    if new.payment_status is distinct from old.payment_status
       and new.payment_status is not null and new.payment_status <> 'pending' then
        new.settled_at := now();
    end if;
    return new;
end;
$$;

drop trigger if exists pod_sessions_note_times on pod_sessions;
create trigger pod_sessions_note_times
    before update on pod_sessions
    for each row execute function qwip_note_session_times();


-- Sessions for the operator, newest first: all, or only the open ones, or only those
-- owed (charge declined or awaiting authentication), started since p_since, for one
-- e-mail address (any case), or the one of p_session_id. The columns of qwip_get_session_with_hold, then the three above.
create or replace function qwip_list_sessions(
    p_open boolean,
    p_owed boolean,
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
    no_charge_reason text
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
           s.captured_pence, s.released_pence, s.code_set_at, s.settled_at, s.no_charge_reason
    from pod_sessions s join pods p on p.id = s.pod_id
    where (not p_open or s.end_time is null)
      and (not p_owed or s.payment_status in ('failed', 'requires_action'))
      and (p_since is null or s.start_time >= p_since)
      and (p_email is null or lower(s.user_email) = lower(p_email))
      and (p_session_id is null or s.id = p_session_id)
    order by s.start_time desc, s.id
    limit p_limit;
$$;

-- The e-mails queued about a session (every dedupe key names its session after a colon),
-- oldest first, and what became of each.
create or replace function qwip_list_session_emails(p_session_id uuid)
returns table (
    kind text,
    recipient text,
    created_at timestamptz,
    sent_at timestamptz,
    dead_at timestamptz,
    attempts integer,
    last_error text
)
language sql
stable
set search_path = public
as $$
    select e.kind, e.recipient, e.created_at, e.sent_at, e.dead_at, e.attempts, e.last_error
    from email_outbox e
    where e.dedupe_key like '%:' || p_session_id::text || '%'
    order by e.created_at, e.id;
$$;


-- End without charge: the cost of an ended session whose charge this caller holds (its
-- lease, from qwip_end_session_with_hold) is fixed at 0, with the operator's reason, so
-- that the settlement releases its hold and charges nothing, whoever carries it out.
-- False when the cost was fixed before (a charge under way or done).
create or replace function qwip_waive_charge(p_session_id uuid, p_reason text)
returns boolean
language sql
set search_path = public
as $$
    with waived as (
        update pod_sessions
        set cost_pence = 0, no_charge_reason = p_reason, updated_at = now()
        where id = p_session_id
          and end_time is not null
          and payment_status = 'pending'
          and cost_pence is null
        returning 1
    )
    select exists (select 1 from waived);
$$;


-- The money by day (in p_timezone) of the sessions started since p_since: how many, their
-- seconds (open ones up to now), the pence taken (charged or captured) and the pence owed.
create or replace function qwip_money_by_day(p_since timestamptz, p_timezone text)
returns table (
    day date,
    sessions integer,
    seconds bigint,
    taken_pence bigint,
    owed_pence bigint
)
language sql
stable
set search_path = public
as $$
    select (s.start_time at time zone p_timezone)::date,
           count(*)::integer,
           coalesce(sum(floor(extract(epoch from (coalesce(s.end_time, now()) - s.start_time)))), 0)::bigint,
           coalesce(sum(s.cost_pence) filter (where s.payment_status = 'succeeded'), 0)::bigint,
           coalesce(sum(s.cost_pence) filter (where s.payment_status in ('failed', 'requires_action')), 0)::bigint
    from pod_sessions s
    where s.start_time >= p_since
    group by 1
    order by 1;
$$;


-- The console's sign-in counts failures in booking_attempts, under its own keys; a
-- successful sign-in forgets its key's count.
create or replace function qwip_forget_attempts(p_key text)
returns void
language sql
set search_path = public
as $$
    delete from booking_attempts where key = p_key;
$$;


select qwip_service_only(array[
    'qwip_note_session_times()',
    'qwip_list_sessions(boolean,boolean,timestamptz,text,uuid,integer)',
    'qwip_list_session_emails(uuid)',
    'qwip_waive_charge(uuid,text)',
    'qwip_money_by_day(timestamptz,text)',
    'qwip_forget_attempts(text)'
]);
