-- Nobody but the service reaches the data, and no migration helper runs what it is given.
-- Idempotent, like 0001 and 0002.

-- qwip_service_only pasted each name it was given into a statement with format('%s'): a
-- name like "f() from public; drop table pods; --" ran whatever followed it. Each name is
-- now read as a function signature first (the regprocedure cast accepts nothing else and
-- names only a function that exists), and the statements are built from that function's
-- own quoted name. Its signature stays text[] so that every migration calling it keeps
-- working unchanged.
create or replace function qwip_service_only(p_functions text[])
returns void
language plpgsql
set search_path = public
as $$
declare
    v_name text;
    v_fn regprocedure;
begin
    foreach v_name in array p_functions loop
        v_fn := v_name::regprocedure;
        execute format('revoke all on function %s from public', v_fn);
        if exists (select 1 from pg_roles where rolname = 'anon') then
            execute format('revoke all on function %s from anon', v_fn);
        end if;
        if exists (select 1 from pg_roles where rolname = 'authenticated') then
            execute format('revoke all on function %s from authenticated', v_fn);
        end if;
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant execute on function %s to service_role', v_fn);
        end if;
    end loop;
end;
$$;

select qwip_service_only(array['qwip_service_only(text[])']);


-- Supabase grants anon (the publishable key) and authenticated (signed-in end users)
-- everything on what is created in public. Row level security already shows them no row;
-- the grants go as well, so that a policy added by mistake one day still opens nothing.
-- The service connects as the owner or as service_role, neither of which needs them.
do $$
declare
    v_role text;
begin
    foreach v_role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = v_role) then
            execute format('revoke all on all tables in schema public from %I', v_role);
            execute format('revoke all on all sequences in schema public from %I', v_role);
            execute format('revoke all on all functions in schema public from %I', v_role);
            -- And on what later migrations create (they run as this same role).
            execute format(
                'alter default privileges in schema public revoke all on tables from %I',
                v_role
            );
            execute format(
                'alter default privileges in schema public revoke all on sequences from %I',
                v_role
            );
            execute format(
                'alter default privileges in schema public revoke all on functions from %I',
                v_role
            );
        end if;
    end loop;
    -- Every role may run a new function unless told otherwise (PUBLIC's default, granted
    -- in every schema, so revoked globally): a function a later migration forgets to hand
    -- to qwip_service_only is then the owner's alone, and service_role's on Supabase.
    alter default privileges revoke execute on functions from public;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        alter default privileges in schema public grant execute on functions to service_role;
    end if;
end $$;
