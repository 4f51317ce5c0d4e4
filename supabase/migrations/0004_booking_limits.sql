-- Booking abuse limits: how many card setups (Stripe Customer + SetupIntent) a client IP
-- and an e-mail address may start in a sliding window, counted in the database so that
-- every replica sees the same count. Idempotent, like the files before it.

-- One row per card setup started, under each key it counts against ('ip:<address>',
-- 'email:<sha-256 of the lowercased address>'). Rows older than the window no longer
-- count, and are swept a few at a time by the function below.
create table if not exists booking_attempts (
    id bigint generated always as identity primary key,
    key text not null,
    created_at timestamptz not null default now()
);
create index if not exists booking_attempts_key_time on booking_attempts (key, created_at);
create index if not exists booking_attempts_time on booking_attempts (created_at);

-- A leaked anon key must read nothing, as for every other table.
alter table booking_attempts enable row level security;


-- Take one slot under every key of p_limits ({key: limit}) at once, or none: 0 when the card setup may go ahead (a
-- row is then recorded under each key), else the seconds until the fullest key frees a
-- slot. Each key's advisory lock (taken in a fixed order, so two callers never wait on
-- each other crosswise) makes the count and the record one step: two replicas cannot both
-- see the last free slot.
create or replace function qwip_take_booking_slot(p_limits jsonb, p_window_seconds integer)
returns integer
language plpgsql
set search_path = public
as $$
declare
    v_window interval := make_interval(secs => p_window_seconds);
    v_key text;
    v_limit integer;
    v_count integer;
    v_frees_at timestamptz;
    v_wait integer := 0;
begin
    for v_key in select key from jsonb_each(p_limits) order by key loop
        perform pg_advisory_xact_lock(hashtextextended('qwip_booking:' || v_key, 0));
    end loop;

    -- A bounded sweep of rows past the window, so the table stays small.
    delete from booking_attempts
    where id in (
        select id from booking_attempts where created_at < now() - v_window limit 100
    );

    for v_key, v_limit in select key, value::integer from jsonb_each_text(p_limits) loop
        select count(*) into v_count
        from booking_attempts
        where key = v_key and created_at > now() - v_window;
        if v_count >= v_limit then
            -- The slot frees when the row that puts the count at the limit leaves the window.
            select created_at + v_window into v_frees_at
            from booking_attempts
            where key = v_key and created_at > now() - v_window
            order by created_at
            offset v_count - v_limit
            limit 1;
            v_wait := greatest(
                v_wait,
                greatest(1, ceil(extract(epoch from (v_frees_at - now())))::integer)
            );
        end if;
    end loop;
    if v_wait > 0 then
        return v_wait;
    end if;

    insert into booking_attempts (key) select key from jsonb_each(p_limits);
    return 0;
end;
$$;


-- Only the service may call it: not public, not anon, not signed-in end users.
revoke all on function qwip_take_booking_slot(jsonb, integer) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on function qwip_take_booking_slot(jsonb, integer) from anon;
        revoke all on table booking_attempts from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on function qwip_take_booking_slot(jsonb, integer)
            from authenticated;
        revoke all on table booking_attempts from authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function qwip_take_booking_slot(jsonb, integer)
            to service_role;
    end if;
end;
$$;
