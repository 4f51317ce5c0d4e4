-- Seam's webhook events, the health of each pod's lock, pods out of service, and the
-- unlocks of each session. Idempotent, like the files before it.

-- Each Seam event is processed once, as each Stripe event is (stripe_events).
create table if not exists seam_events (
    id text primary key,
    type text not null,
    processed_at timestamptz not null default now()
);
alter table seam_events enable row level security;

-- disabled_reason: set by the operator (`pods disable`), null when the pod may be booked.
-- lock_online: null until Seam says; lock_health_at is when Seam's latest word on it was
-- true, so that an older event delivered late changes nothing.
alter table pods add column if not exists disabled_reason text;
alter table pods add column if not exists lock_online boolean;
alter table pods add column if not exists lock_health_at timestamptz;
alter table pods add column if not exists lock_battery_level numeric(4, 3);
alter table pods add column if not exists lock_battery_low boolean not null default false;
alter table pods add column if not exists lock_tampered_at timestamptz;

-- What the lock says the session's code opened: evidence for a dispute.
create table if not exists session_unlocks (
    session_id uuid primary key references pod_sessions (id) on delete cascade,
    first_unlocked_at timestamptz not null,
    last_unlocked_at timestamptz not null,
    unlock_count integer not null default 1
);
alter table session_unlocks enable row level security;


-- Whether the Seam event was processed before.
create or replace function qwip_seam_event_seen(p_event_id text)
returns boolean
language sql
stable
set search_path = public
as $$
    select exists (select 1 from seam_events where id = p_event_id);
$$;


-- Record a Seam event as processed: true for the one caller that did.
create or replace function qwip_record_seam_event(p_event_id text, p_event_type text)
returns boolean
language plpgsql
set search_path = public
as $$
begin
    insert into seam_events (id, type) values (p_event_id, p_event_type) on conflict do nothing;
    return found;
end;
$$;


-- `access_code.set_on_device`: the open session's code is on its lock. 'duplicate' (seen
-- before), 'recorded', or 'unknown' (no open session has that code, or it failed or is gone).
create or replace function qwip_seam_code_set(
    p_event_id text,
    p_event_type text,
    p_access_code_id text
)
returns text
language plpgsql
set search_path = public
as $$
begin
    if not qwip_record_seam_event(p_event_id, p_event_type) then
        return 'duplicate';
    end if;
    update pod_sessions
    set access_code_status = 'set'
    where access_code_id = p_access_code_id
      and end_time is null
      and access_code_status is distinct from 'failed'
      and access_code_status is distinct from 'removed'
      and access_code_status is distinct from 'expired';
    return case when found then 'recorded' else 'unknown' end;
end;
$$;


-- `access_code.failed_to_set_on_device` or `…delay_in_setting_on_device`: the open session
-- whose code it is, marked failed, for the one caller that did (else null). A code Seam
-- has said is set is not given up by a late event.
create or replace function qwip_fail_access_code_on_lock(p_access_code_id text)
returns uuid
language sql
set search_path = public
as $$
    update pod_sessions
    set access_code_status = 'failed'
    where access_code_id = p_access_code_id
      and end_time is null
      and access_code_status is distinct from 'set'
      and access_code_status is distinct from 'failed'
      and access_code_status is distinct from 'removed'
      and access_code_status is distinct from 'expired'
    returning id;
$$;


-- `lock.unlocked` with a session's code: its first unlock and their count.
create or replace function qwip_seam_lock_unlocked(
    p_event_id text,
    p_event_type text,
    p_access_code_id text,
    p_occurred_at timestamptz
)
returns text
language plpgsql
set search_path = public
as $$
declare
    v_session_id uuid;
begin
    if not qwip_record_seam_event(p_event_id, p_event_type) then
        return 'duplicate';
    end if;
    select id into v_session_id from pod_sessions where access_code_id = p_access_code_id;
    if v_session_id is null then
        return 'unknown';
    end if;
    -- Events come in any order: the earliest unlock is the first, whenever it arrives.
    insert into session_unlocks (session_id, first_unlocked_at, last_unlocked_at)
    values (v_session_id, p_occurred_at, p_occurred_at)
    on conflict (session_id) do update
    set first_unlocked_at = least(session_unlocks.first_unlocked_at, excluded.first_unlocked_at),
        last_unlocked_at = greatest(session_unlocks.last_unlocked_at, excluded.last_unlocked_at),
        unlock_count = session_unlocks.unlock_count + 1;
    return 'recorded';
end;
$$;


create or replace function qwip_get_session_unlocks(p_session_id uuid)
returns table (first_unlocked_at timestamptz, unlock_count integer)
language sql
stable
set search_path = public
as $$
    select first_unlocked_at, unlock_count from session_unlocks where session_id = p_session_id;
$$;


-- What Seam says of a lock (from an event, p_event_id set, or from reading the device at a
-- booking), for every pod with that device; null arguments change nothing. p_alert (an
-- e-mail of the queue's JSON shape, or null) is queued only when this makes a new incident:
-- the lock goes offline from online or unknown, the battery becomes low, or a tamper. So a
-- repeated `device.disconnected` without a `device.connected` between tells nobody again.
-- 'duplicate' (event seen before), 'alerted', 'recorded', or 'unknown' (no pod has it).
create or replace function qwip_record_lock_health(
    p_event_id text,
    p_event_type text,
    p_device_id text,
    p_occurred_at timestamptz,
    p_online boolean,
    p_battery_level numeric,
    p_battery_low boolean,
    p_tampered boolean,
    p_alert jsonb
)
returns text
language plpgsql
set search_path = public
as $$
declare
    v_pod pods%rowtype;
    v_incident boolean := false;
    v_found boolean := false;
begin
    if p_event_id is not null and not qwip_record_seam_event(p_event_id, p_event_type) then
        return 'duplicate';
    end if;
    for v_pod in
        select * from pods where seam_device_id = p_device_id order by id for update
    loop
        v_found := true;
        if p_online is not null
           and (v_pod.lock_health_at is null or v_pod.lock_health_at <= p_occurred_at) then
            if not p_online and v_pod.lock_online is distinct from false then
                v_incident := true;
            end if;
            update pods set lock_online = p_online, lock_health_at = p_occurred_at
            where id = v_pod.id;
        end if;
        if p_battery_low is not null then
            if p_battery_low and not v_pod.lock_battery_low then
                v_incident := true;
            end if;
            update pods
            set lock_battery_low = p_battery_low,
                lock_battery_level = coalesce(p_battery_level, lock_battery_level)
            where id = v_pod.id;
        end if;
        if p_tampered then
            v_incident := true;
            update pods set lock_tampered_at = p_occurred_at where id = v_pod.id;
        end if;
    end loop;
    if not v_found then
        return 'unknown';
    end if;
    if v_incident and p_alert is not null then
        perform qwip_queue_emails(jsonb_build_array(p_alert));
        return 'alerted';
    end if;
    return 'recorded';
end;
$$;


-- The operator takes a pod out of service (a reason) or puts it back (null): false for an
-- unknown pod. A session already running is not touched.
create or replace function qwip_set_pod_disabled(p_name text, p_reason text)
returns boolean
language plpgsql
set search_path = public
as $$
begin
    update pods set disabled_reason = p_reason where name = p_name;
    return found;
end;
$$;


select qwip_service_only(array[
    'qwip_seam_event_seen(text)',
    'qwip_record_seam_event(text, text)',
    'qwip_seam_code_set(text, text, text)',
    'qwip_fail_access_code_on_lock(text)',
    'qwip_seam_lock_unlocked(text, text, text, timestamptz)',
    'qwip_get_session_unlocks(uuid)',
    'qwip_record_lock_health(text, text, text, timestamptz, boolean, numeric, boolean, boolean, jsonb)',
    'qwip_set_pod_disabled(text, text)'
]);
