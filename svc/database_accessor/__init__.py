"""Every query of the service, behind one small async interface.

`Database` (in `base`) is what the rest of the service calls. Two backends implement it:

- `PostgresDatabase` (`postgres`), on asyncpg with a pool, for a connection string (any
  Postgres: Supabase's, the embedded one of local mode, the tests');
- `SupabaseDatabase` (`supabase`), on the official `supabase` client, for a project's URL and
  service-role key: every query is an HTTP request to the project's PostgREST API.

The rules that need several statements at once, or the database's clock, are SQL
functions in ``supabase/migrations`` (applied by `migrations`). Each call of one is written
once, in `base.Database`: the asyncpg backend runs it as a ``select`` with named
arguments, the Supabase one as an ``rpc()``, so both run the same definition of every rule.
"""

from svc.database_accessor.base import Database, DatabaseUnavailable, InvalidPod, PodNameTaken
from svc.database_accessor.migrations import MIGRATIONS_DIR, apply_migrations, list_migrations
from svc.database_accessor.postgres import PostgresDatabase
from svc.database_accessor.supabase import SupabaseDatabase

__all__ = [
    "MIGRATIONS_DIR",
    "Database",
    "DatabaseUnavailable",
    "InvalidPod",
    "PodNameTaken",
    "PostgresDatabase",
    "SupabaseDatabase",
    "apply_migrations",
    "list_migrations",
]
