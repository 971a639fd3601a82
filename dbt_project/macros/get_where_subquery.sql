{#- A data test's `where` may name the run's business date as __business_date__: the tests of an
    incremental mart then check the day the run wrote, not every day again (dbt's documented way to
    give `where` run-time values: override get_where_subquery). Portable: the subquery and its alias
    are the same on DuckDB and SQL Server. __contact_refresh_start__ is the first day
    fct_campaign_contacts replaces (the last `contact_refresh_days`). -#}
{% macro get_where_subquery(relation) -%}
    {% set where = config.get('where', '') %}
    {% if where %}
        {% set where = where | replace('__business_date__', business_date())
            | replace('__contact_refresh_start__', days_before(var('contact_refresh_days'))) %}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {% do return(filtered) %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}
