{#- No id of the run's own load (the rows whose `loaded_for` column is the run's business date)
    appears more than once in the whole relation: the load's rows against every row held, at the
    cost of the load's ids, not of grouping every row again. -#}
{% test unique_in_the_load(model, column_name, loaded_for) %}
select {{ column_name }}, count(*) as n_rows
from {{ model }}
where {{ column_name }} in (
    select {{ column_name }} from {{ model }} where {{ loaded_for }} = {{ business_date() }}
)
group by {{ column_name }}
having count(*) > 1
{% endtest %}
