-- A SetupIntent starts at most one thing, once. Its first attempt to start a session
-- decides for good: the session started, or the pod was unavailable (and the customer was
-- told, by the page and by e-mail, that nothing started and nothing was charged). Stripe
-- retries `setup_intent.succeeded` for up to three days, so without a record of that
-- decision a late delivery, arriving once the pod is free, would start a session the
-- customer was told had not started.

create table if not exists setup_intent_outcomes (
    setup_intent_id text primary key,
    outcome text not null
        constraint setup_intent_outcomes_outcome check (outcome in ('started', 'pod_unavailable')),
    -- the session it started; none when the pod was unavailable
    session_id uuid references pod_sessions (id),
    decided_at timestamptz not null default now(),
    constraint setup_intent_outcomes_session_when_started
        check ((outcome = 'started') = (session_id is not null))
);

-- Like every table: row level security on, no policy, nothing granted to the public roles.
alter table setup_intent_outcomes enable row level security;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on table setup_intent_outcomes from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on table setup_intent_outcomes from authenticated;
    end if;
end;
$$;

-- Sessions started before this table existed decided their SetupIntents too.
insert into setup_intent_outcomes (setup_intent_id, outcome, session_id, decided_at)
select setup_intent_id, 'started', id, start_time from pod_sessions
on conflict (setup_intent_id) do nothing;


-- Start a session for a SetupIntent, or say why not; the decision is recorded with the
-- attempt, in its transaction. Outcomes:
--   duplicate        the event was processed before: nothing done
--   existing         this SetupIntent already started its session (webhook and page raced)
--   refused_before   this SetupIntent was refused before (pod unavailable): never starts
--   pod_unavailable  another session holds the pod: refused for good, the customer told by e-mail
--   code_clash       the access code was used on this pod lately: call again with another
--                    (nothing is decided)
--   started          the pod is claimed, the session is open, the access-code e-mail queued
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
begin
    if p_event_id is not null and not qwip_record_event(p_event_id, p_event_type) then
        return jsonb_build_object('outcome', 'duplicate');
    end if;

    -- One attempt at a time per SetupIntent (the webhook and the page race): the second
    -- waits here for the first to commit, then reads what it decided. A collision of the
    -- hash only makes two SetupIntents take turns.
    perform pg_advisory_xact_lock(hashtextextended('qwip_start_session:' || p_setup_intent_id, 0));

    select * into v_decided from setup_intent_outcomes where setup_intent_id = p_setup_intent_id;
    if found then
        if v_decided.outcome = 'started' then
            return jsonb_build_object('outcome', 'existing', 'session_id', v_decided.session_id);
        end if;
        return jsonb_build_object('outcome', 'refused_before');
    end if;
    -- A session opened by a replica still running the old function records no outcome.
    select id into v_existing from pod_sessions where setup_intent_id = p_setup_intent_id;
    if found then
        insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
        values (p_setup_intent_id, 'started', v_existing);
        return jsonb_build_object('outcome', 'existing', 'session_id', v_existing);
    end if;

    -- Waits for a concurrent claim of the same pod to commit, then sees its result.
    update pods set in_use = true where id = p_pod_id and not in_use returning * into v_pod;
    if not found then
        insert into setup_intent_outcomes (setup_intent_id, outcome)
        values (p_setup_intent_id, 'pod_unavailable');
        perform qwip_queue_emails(jsonb_build_array(p_unavailable_email));
        return jsonb_build_object('outcome', 'pod_unavailable');
    end if;

    -- A code still fresh on this pod's keypad would open the door for its last user too.
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
        stripe_payment_method, setup_intent_id, access_code, free_minutes
    ) values (
        p_session_id, p_pod_id, p_user_email, v_pod.price, v_pod.currency, p_customer_id,
        p_payment_method, p_setup_intent_id, p_access_code, p_free_minutes
    ) returning start_time into v_start;
    insert into setup_intent_outcomes (setup_intent_id, outcome, session_id)
    values (p_setup_intent_id, 'started', p_session_id);

    perform qwip_queue_emails(jsonb_build_array(
        p_started_email || jsonb_build_object(
            'payload', (p_started_email -> 'payload') || jsonb_build_object('start_time', v_start)
        )
    ));
    return jsonb_build_object('outcome', 'started', 'session_id', p_session_id);
end;
$$;


-- The old entry point, for a replica still running the previous release during a rolling
-- deploy: the same rule, in the words that release knows (it has no `refused_before`;
-- `pod_unavailable` tells its customer the same thing, and the e-mail is not queued twice).
create or replace function qwip_start_session(
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
    v_result jsonb;
begin
    v_result := qwip_start_session_once(
        p_event_id, p_event_type, p_session_id, p_setup_intent_id, p_pod_id, p_user_email,
        p_customer_id, p_payment_method, p_access_code, p_free_minutes, p_started_email,
        p_unavailable_email
    );
    if v_result ->> 'outcome' = 'refused_before' then
        return jsonb_build_object('outcome', 'pod_unavailable');
    end if;
    return v_result;
end;
$$;


-- Only the service may call it: not public, not anon, not signed-in end users; service_role
-- may (the roles exist on Supabase, not on a plain Postgres). Written out rather than
-- through qwip_service_only, which builds its statements from text.
revoke all on function qwip_start_session_once(
    text, text, uuid, text, bigint, text, text, text, text, integer, jsonb, jsonb
) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function qwip_start_session_once(
            text, text, uuid, text, bigint, text, text, text, text, integer, jsonb, jsonb
        ) from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on function qwip_start_session_once(
            text, text, uuid, text, bigint, text, text, text, text, integer, jsonb, jsonb
        ) from authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function qwip_start_session_once(
            text, text, uuid, text, bigint, text, text, text, text, integer, jsonb, jsonb
        ) to service_role;
    end if;
end;
$$;
