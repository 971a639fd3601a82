{#- Personal data as sales staff may see it (Ley 29733: the minimum, masked). Applied in staging,
    so no model downstream ever holds the clear value. Portable: right/left and dbt.concat. -#}

{#- A DNI or RUC with only its last 3 digits shown: 12345678 -> *****678 -#}
{% macro mask_document(column) -%}
    {{ dbt.concat(["'*****'", "right(" ~ column ~ ", 3)"]) }}
{%- endmacro %}

{#- A full name reduced to its first letter: Maria Quispe -> M*** -#}
{% macro mask_name(column) -%}
    {{ dbt.concat(["left(" ~ column ~ ", 1)", "'***'"]) }}
{%- endmacro %}
