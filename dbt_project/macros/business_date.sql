{#- The run's business date as a date literal, portable to DuckDB and SQL Server.

    It comes from the environment variable CRM_BUSINESS_DATE (the DAG sets it to {{ ds }}), read
    only when the SQL is executed: parsing never depends on the date, so a new day reuses dbt's
    partial parse instead of parsing the whole project again (a --vars change forces a full
    parse). The var business_date, when given (unit tests, --vars), takes precedence. -#}
{% macro business_date() -%}
    {%- set day = var('business_date', none) -%}
    {%- if day is none and execute -%}
        {%- set day = env_var('CRM_BUSINESS_DATE', '') -%}
        {%- if not day -%}
            {{ exceptions.raise_compiler_error("no business date: set CRM_BUSINESS_DATE (YYYY-MM-DD) or --vars '{business_date: ...}'") }}
        {%- endif -%}
    {%- endif -%}
    cast('{{ day or "1970-01-01" }}' as date)
{%- endmacro %}

{#- Whole years between two dates (age, tenure). -#}
{% macro years_between(start_date, end_date) -%}
    floor({{ dbt.datediff(start_date, end_date, 'day') }} / 365.25)
{%- endmacro %}

{#- The date `n` days before the business date, as a date: `booking_date > days_before(30)` is the
    30 days up to and including the business date. A constant, so the warehouse works it out once
    instead of a date difference per row. -#}
{% macro days_before(n) -%}
    cast({{ dbt.dateadd('day', -n, business_date()) }} as date)
{%- endmacro %}
