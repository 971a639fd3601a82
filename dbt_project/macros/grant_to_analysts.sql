{#- The analysts' role (CRM_ANALYST_ROLE, `crm sql` connects as it) reads `marts`, `snapshots` and
    `campaigns`, and nothing else: never `raw` or `staging`, which hold clear personal data. Run at
    the end of every dbt invocation on a server (on-run-end), so a table a run (re)creates, or one the
    scoring stage made since, is readable at once. On PostgreSQL each schema's usage, select on all
    its tables and views, and the default for the ones made later; on SQL Server (Azure SQL) select
    on the schema, which covers every object in it. Nothing on DuckDB: analysts read its published
    copy (serving/analysts.py). The role itself is the deployment's to create (the embedded
    PostgreSQL creates it); where it does not exist the grants are skipped with a warning, so a
    warehouse without analysts still runs. -#}
{% macro grant_to_analysts() %}
    {%- if not execute or target.type == 'duckdb' or flags.INTROSPECT is false
          or flags.WHICH not in ('build', 'run', 'seed', 'snapshot') -%}
        {{ return('') }}
    {%- endif -%}
    {%- set role = env_var('CRM_ANALYST_ROLE', 'crm_analyst') -%}
    {%- if target.type == 'postgres' -%}
        {%- set exists = run_query("select 1 from pg_roles where rolname = '" ~ role ~ "'") -%}
    {%- else -%}
        {%- set exists = run_query("select 1 from sys.database_principals where name = '" ~ role ~ "'") -%}
    {%- endif -%}
    {%- if exists.rows | length == 0 -%}
        {{ log("the analysts' role " ~ role ~ " does not exist on the warehouse: no grants (create it to let analysts query)", info=true) }}
        {{ return('') }}
    {%- endif -%}
    {#- a grant the warehouse refuses (a table another role owns, a principal without CONTROL) is a
        warning in the server's log, never a failed run: the day's offers do not wait on analysts -#}
    {%- for schema in ['marts', 'snapshots', 'campaigns'] if adapter.check_schema_exists(target.database, schema) -%}
        {%- if target.type == 'postgres' -%}
            {%- do run_query(
                'do $$ begin '
                ~ 'grant usage on schema "' ~ schema ~ '" to "' ~ role ~ '"; '
                ~ 'grant select on all tables in schema "' ~ schema ~ '" to "' ~ role ~ '"; '
                ~ 'alter default privileges in schema "' ~ schema ~ '" grant select on tables to "' ~ role ~ '"; '
                ~ "exception when others then raise warning 'the analysts'' grants on " ~ schema ~ " failed: %', sqlerrm; "
                ~ 'end $$'
            ) -%}
        {%- else -%}
            {%- do run_query(
                'begin try grant select on schema::[' ~ schema ~ '] to [' ~ role ~ ']; end try '
                ~ "begin catch print 'the analysts'' grant on " ~ schema ~ " failed: ' + error_message(); end catch"
            ) -%}
        {%- endif -%}
    {%- endfor -%}
{% endmacro %}
