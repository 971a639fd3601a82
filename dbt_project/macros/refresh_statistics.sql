{#- A table a model has just (re)built or added a date to gets fresh statistics on a server, in the
    model's own transaction, before the models and tests after it read it: PostgreSQL's autovacuum
    and SQL Server's automatic update come later than the next statement, and a planner that
    believes a mart holds none of the day's rows nests loops over it (a relationships test on
    campaign_eligibility ran for over five minutes on 100,000 customers). DuckDB keeps its own. -#}
{% macro refresh_statistics() %}
    {%- if not execute or config.get('materialized') not in ('table', 'incremental') -%}
        {{ return('') }}
    {%- endif -%}
    {%- if target.type == 'postgres' -%}
        analyze {{ this }}
    {%- elif target.type == 'sqlserver' -%}
        update statistics {{ this }}
    {%- endif -%}
{% endmacro %}
