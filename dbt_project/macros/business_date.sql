{#- The run's business date as a date literal, portable to DuckDB and SQL Server. -#}
{% macro business_date() -%}
    cast('{{ var("business_date") }}' as date)
{%- endmacro %}

{#- Whole years between two dates (age, tenure). -#}
{% macro years_between(start_date, end_date) -%}
    floor({{ dbt.datediff(start_date, end_date, 'day') }} / 365.25)
{%- endmacro %}
