-- A hold on the card at booking, captured at the end (issue 16). The database knows of
-- every hold before it is placed at Stripe (card_holds, one per SetupIntent, with the
-- session id the hold names in its metadata), so that a hold whose session never starts
-- is found and released even if the replica that placed it died. Sessions keep the
-- hold's PaymentIntent and the amounts held, captured and released.

alter table pod_sessions add column if not exists hold_payment_intent_id text;
alter table pod_sessions add column if not exists hold_pence integer
    constraint pod_sessions_hold_not_negative check (hold_pence >= 0);
alter table pod_sessions add column if not exists captured_pence integer
    constraint pod_sessions_captured_not_negative check (captured_pence >= 0);
alter table pod_sessions add column if not exists released_pence integer
    constraint pod_sessions_released_not_negative check (released_pence >= 0);

-- States: placing (recorded, sent to Stripe), requires_action (the cardholder must
-- authenticate), held (requires_capture: may start the session), started (its session
-- opened: the session settles it), releasing (being cancelled), canceled, failed
-- (declined: nothing is held).
create table if not exists card_holds (
    setup_intent_id text primary key,
    session_id uuid not null,
    pod_id bigint not null references pods (id),
    amount_pence integer not null constraint card_holds_amount_positive check (amount_pence > 0),
    currency text not null,
    payment_intent_id text,
    state text not null default 'placing' constraint card_holds_state check (
        state in ('placing', 'requires_action', 'held', 'started', 'releasing', 'canceled',
                  'failed')
    ),
    error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index if not exists card_holds_open
    on card_holds (updated_at) where state in ('placing', 'requires_action', 'held', 'releasing');

alter table card_holds enable row level security;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on table card_holds from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on table card_holds from authenticated;
    end if;
end;
$$;


-- The hold of a SetupIntent: recorded by the first caller (its session id and amount
-- count for every later one, so that the same idempotency key always goes with the same
-- parameters), then returned as it stands.
create or replace function qwip_begin_hold(
    p_setup_intent_id text,
    p_session_id uuid,
    p_pod_id bigint,
    p_amount_pence integer,
    p_currency text
)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_hold card_holds;
begin
    insert into card_holds (setup_intent_id, session_id, pod_id, amount_pence, currency)
    values (p_setup_intent_id, p_session_id, p_pod_id, p_amount_pence, p_currency)
    on conflict (setup_intent_id) do nothing;
    select * into v_hold from card_holds where setup_intent_id = p_setup_intent_id;
    return jsonb_build_object(
        'session_id', v_hold.session_id,
        'amount_pence', v_hold.amount_pence,
        'currency', v_hold.currency,
        'payment_intent_id', v_hold.payment_intent_id,
        'state', v_hold.state,
        'error', v_hold.error
    );
end;
$$;


-- What Stripe said of a hold. Only forward: a hold being released, released, declined or
-- whose session started keeps its state (canceled is always allowed but after a start).
-- Returns the state it now has.
create or replace function qwip_record_hold(
    p_setup_intent_id text,
    p_payment_intent_id text,
    p_state text,
    p_error text
)
returns text
language plpgsql
set search_path = public
as $$
declare
    v_state text;
begin
    update card_holds
    set payment_intent_id = coalesce(p_payment_intent_id, payment_intent_id),
        state = p_state,
        error = coalesce(p_error, error),
        updated_at = now()
    where setup_intent_id = p_setup_intent_id
      and (
          (p_state in ('requires_action', 'held', 'failed')
           and state in ('placing', 'requires_action', 'held'))
          or (p_state = 'canceled' and state not in ('started', 'failed'))
      )
    returning state into v_state;
    if not found then
        select state into v_state from card_holds where setup_intent_id = p_setup_intent_id;
    end if;
    return v_state;
end;
$$;


-- Holds whose session never started, quiet for p_idle_seconds (abandoned authentication,
-- a replica that died between hold and start, a release that did not finish): each is
-- handed to one caller, marked releasing, under the same per-SetupIntent lock as the
-- start, so a hold is either started or released, never both.
create or replace function qwip_claim_abandoned_holds(p_idle_seconds integer)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_candidate text;
    v_hold card_holds;
    v_claimed jsonb := '[]'::jsonb;
begin
    for v_candidate in
        select setup_intent_id from card_holds
        where state in ('placing', 'requires_action', 'held', 'releasing')
          and updated_at < now() - make_interval(secs => p_idle_seconds)
        order by updated_at
        limit 50
    loop
        perform pg_advisory_xact_lock(hashtextextended('qwip_start_session:' || v_candidate, 0));
        update card_holds h
        set state = 'releasing', updated_at = now()
        where h.setup_intent_id = v_candidate
          and h.state in ('placing', 'requires_action', 'held', 'releasing')
          and h.updated_at < now() - make_interval(secs => p_idle_seconds)
          and not exists (
              select 1 from setup_intent_outcomes o
              where o.setup_intent_id = v_candidate and o.outcome = 'started'
          )
        returning * into v_hold;
        if found then
            v_claimed := v_claimed || jsonb_build_object(
                'setup_intent_id', v_hold.setup_intent_id,
                'session_id', v_hold.session_id,
                'pod_id', v_hold.pod_id,
                'amount_pence', v_hold.amount_pence,
                'currency', v_hold.currency,
                'payment_intent_id', v_hold.payment_intent_id
            );
        end if;
    end loop;
    return v_claimed;
end;
$$;


-- 0005's start, which now also refuses a SetupIntent whose hold is not held (released,
-- declined, awaiting authentication) and puts a held hold on the session it opens.
create or replace function qwip_start_session_once(
    p_event_id text,
    p_event_type text,
    p_session_id uuid,
    p_setup_intent_id text,
    p_pod_id bigint,
    p_user_email text,
    p_customer_id text,
    p_payment_method text,
    p_access_code text,
    p_free_minutes integer,
    p_started_email jsonb,
    p_unavailable_email jsonb
)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_decided setup_intent_outcomes;
    v_existing uuid;
    v_pod pods;
    v_start timestamptz;
    v_hold card_holds;
begin
    if p_event_id is not null and not qwip_record_event(p_event_id, p_event_type) then
        return jsonb_build_object('outcome', 'duplicate');
    end if;

    perform pg_advisory_xact_lock(hashtextextended('qwip_start_session:' || p_setup_intent_id, 0));

    select * into v_decided from setup_intent_outcomes where setup_intent_id = p_setup_intent_id;
    if found then
        if v_decided.outcome = 'started' then
            return jsonb_build_object('outcome', 'existing', 'session_id', v_decided.session_id);
        end if;
        return jsonb_build_object('outcome', 'refused_before');
    end if;
    select id into v_existing from pod_sessions where setup_intent_id = p_setup_intent_id;
    if found then
        insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
        values (p_setup_intent_id, 'started', v_existing);
        return jsonb_build_object('outcome', 'existing', 'session_id', v_existing);
    end if;

    -- With holds on, only a hold Stripe holds may open the door (nothing is decided).
    select * into v_hold from card_holds where setup_intent_id = p_setup_intent_id;
    if found and v_hold.state <> 'held' then
        return jsonb_build_object('outcome', 'hold_released');
    end if;

    update pods set in_use = true where id = p_pod_id and not in_use returning * into v_pod;
    if not found then
        insert into setup_intent_outcomes (setup_intent_id, outcome)
        values (p_setup_intent_id, 'pod_unavailable');
        perform qwip_queue_emails(jsonb_build_array(p_unavailable_email));
        return jsonb_build_object('outcome', 'pod_unavailable');
    end if;

    if exists (
        select 1 from pod_sessions
        where pod_id = p_pod_id and access_code = p_access_code
          and end_time > now() - interval '1 day'
    ) then
        update pods set in_use = false where id = p_pod_id;
        return jsonb_build_object('outcome', 'code_clash');
    end if;

    insert into pod_sessions (
        id, pod_id, user_email, price_per_minute, currency, stripe_customer_id,
        stripe_payment_method, setup_intent_id, access_code, free_minutes,
        hold_payment_intent_id, hold_pence
    ) values (
        p_session_id, p_pod_id, p_user_email, v_pod.price, v_pod.currency, p_customer_id,
        p_payment_method, p_setup_intent_id, p_access_code, p_free_minutes,
        v_hold.payment_intent_id, v_hold.amount_pence
    ) returning start_time into v_start;
    insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
    values (p_setup_intent_id, 'started', p_session_id);
    update card_holds set state = 'started', updated_at = now()
    where setup_intent_id = p_setup_intent_id;

    perform qwip_queue_emails(jsonb_build_array(
        p_started_email || jsonb_build_object(
            'payload', (p_started_email -> 'payload') || jsonb_build_object('start_time', v_start)
        )
    ));
    return jsonb_build_object('outcome', 'started', 'session_id', p_session_id);
end;
$$;


-- The session's rows with the hold's columns, under new names: 0001's functions stay as
-- they are for a replica of the previous release during a rolling deploy (and 0001 still
-- applies over itself).
create or replace function qwip_get_session_with_hold(
    p_session_id uuid default null,
    p_setup_intent_id text default null
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
    released_pence integer
)
language sql
stable
-- No `set search_path`, as in 0001: the preview's select stays inlined.
as $$
    select s.id, s.pod_id, p.name, p.address, p.seam_device_id, s.user_email, s.start_time,
           s.end_time, s.price_per_minute::text, s.free_minutes, s.currency,
           s.stripe_customer_id, s.stripe_payment_method, s.setup_intent_id, s.access_code,
           s.access_code_id, s.access_code_status, s.cost_pence, s.payment_intent_id,
           s.payment_status, s.payment_error, now(), s.hold_payment_intent_id, s.hold_pence,
           s.captured_pence, s.released_pence
    from pod_sessions s join pods p on p.id = s.pod_id
    where s.id = p_session_id or s.setup_intent_id = p_setup_intent_id;
$$;

create or replace function qwip_end_session_with_hold(
    p_session_id uuid,
    p_max_minutes integer,
    p_lease_seconds integer
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
    charge_claimed boolean
)
language plpgsql
set search_path = public
as $$
#variable_conflict use_column
declare
    v_pod_id bigint;
    v_claimed boolean;
begin
    update pod_sessions s
    set end_time = least(now(), s.start_time + make_interval(mins => p_max_minutes)),
        payment_status = 'pending',
        charge_locked_until = now() + make_interval(secs => p_lease_seconds),
        updated_at = now()
    where s.id = p_session_id and s.end_time is null
    returning s.pod_id into v_pod_id;
    v_claimed := found;
    if v_claimed then
        update pods set in_use = false where pods.id = v_pod_id;
    else
        update pod_sessions s
        set charge_locked_until = now() + make_interval(secs => p_lease_seconds),
            updated_at = now()
        where s.id = p_session_id
          and s.payment_status = 'pending'
          and (s.charge_locked_until is null or s.charge_locked_until < now());
        v_claimed := found;
    end if;
    return query select g.*, v_claimed from qwip_get_session_with_hold(p_session_id => p_session_id) g;
end;
$$;


-- qwip_record_payment, which also records what was captured of the hold and what was
-- released.
create or replace function qwip_record_settlement(
    p_session_id uuid,
    p_cost_pence integer,
    p_status text,
    p_payment_intent_id text,
    p_error text,
    p_emails jsonb,
    p_event_id text,
    p_event_type text,
    p_captured_pence integer,
    p_released_pence integer
)
returns text
language plpgsql
set search_path = public
as $$
begin
    if p_event_id is not null and not qwip_record_event(p_event_id, p_event_type) then
        return 'duplicate';
    end if;
    update pod_sessions
    set cost_pence = coalesce(cost_pence, p_cost_pence),
        payment_status = p_status,
        payment_intent_id = coalesce(p_payment_intent_id, payment_intent_id),
        payment_error = p_error,
        captured_pence = coalesce(p_captured_pence, captured_pence),
        released_pence = coalesce(p_released_pence, released_pence),
        charge_locked_until = null,
        updated_at = now()
    where id = p_session_id
      and end_time is not null
      and coalesce(cost_pence, p_cost_pence) is not null
      and (
          payment_status = 'pending'
          or (payment_status in ('failed', 'requires_action') and p_status = 'succeeded')
      );
    if not found then
        return 'unchanged';
    end if;
    perform qwip_queue_emails(p_emails);
    return 'recorded';
end;
$$;


select qwip_service_only(array[
    'qwip_begin_hold(text,uuid,bigint,integer,text)',
    'qwip_record_hold(text,text,text,text)',
    'qwip_claim_abandoned_holds(integer)',
    'qwip_get_session_with_hold(uuid,text)',
    'qwip_end_session_with_hold(uuid,integer,integer)',
    'qwip_record_settlement(uuid,integer,text,text,text,jsonb,text,text,integer,integer)'
]);
