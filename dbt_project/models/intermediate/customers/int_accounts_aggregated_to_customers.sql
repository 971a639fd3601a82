-- Balances (in PEN) by product and product holdings of each customer on the business date.
{% set products = var('products') %}
with accounts as (
    select
        customer_id,
        product,
        case when currency = 'USD' then balance * {{ var('usd_pen_rate') }} else balance end as balance_pen
    from {{ ref('stg_core_banking__accounts') }}
    where as_of_date = {{ business_date() }} and status = 'ACTIVE'
),

aggregated as (
    select
        customer_id,
        cast(count(*) as integer) as n_products,
        sum(case when balance_pen > 0 then balance_pen else 0 end) as total_balance_pen,
        sum(case when balance_pen < 0 then -balance_pen else 0 end) as total_debt_pen,
        {% for p in products %}
        max(case when product = '{{ p }}' then 1 else 0 end) as has_{{ p | lower }},
        sum(case when product = '{{ p }}' then balance_pen else 0 end) as balance_{{ p | lower }}_pen{{ "," if not loop.last }}
        {% endfor %}
    from accounts
    group by customer_id
)

select * from aggregated
