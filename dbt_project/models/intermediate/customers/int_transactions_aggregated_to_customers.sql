-- Recency, frequency and monetary value of each customer's transactions over 30, 90 and 180 days,
-- the accounts they went through, and card spend by merchant category over 180 days. One pass over the window; windows are ranges
-- of booking_date (the business date included), compared against constants.
{% set windows = [30, 90, 180] %}
{% set categories = var('merchant_categories') %}
with transactions as (
    select
        customer_id,
        account_id,
        transaction_type,
        merchant_category,
        amount,
        booking_date
    from {{ ref('stg_core_banking__transactions') }}
    where booking_date > {{ days_before(180) }} and booking_date <= {{ business_date() }}
),

aggregated as (
    select
        customer_id,
        cast({{ dbt.datediff('max(booking_date)', business_date(), 'day') }} as integer) as days_since_last_tx,
        {% for w in windows %}
        cast(sum(case when booking_date > {{ days_before(w) }} then 1 else 0 end) as integer) as tx_count_{{ w }}d,
        sum(case when booking_date > {{ days_before(w) }} and amount < 0 then -amount else 0 end)
            as spend_{{ w }}d_pen,
        {% endfor %}
        sum(case when booking_date > {{ days_before(90) }} and transaction_type = 'SALARY_DEPOSIT' then amount else 0 end)
            as salary_90d_pen,
        sum(case when transaction_type = 'SALARY_DEPOSIT' then amount else 0 end) as salary_180d_pen,
        -- how many deposits: their average is the salary itself (the sum alone mixes it with how often it comes)
        cast(sum(case when booking_date > {{ days_before(90) }} and transaction_type = 'SALARY_DEPOSIT' then 1 else 0 end)
            as integer) as salary_count_90d,
        cast(sum(case when transaction_type = 'SALARY_DEPOSIT' then 1 else 0 end) as integer) as salary_count_180d,
        cast(sum(case when booking_date > {{ days_before(90) }} and transaction_type = 'POS_PURCHASE' then 1 else 0 end)
            as integer) as pos_count_90d,
        cast(sum(case when booking_date > {{ days_before(90) }} and transaction_type = 'WALLET_P2P' then 1 else 0 end)
            as integer) as wallet_count_90d,
        -- the accounts money moved through: a card pays before it is among the accounts listed to us
        cast(count(distinct account_id) as integer) as accounts_transacted_180d,
        {% for c in categories %}
        sum(case when merchant_category = '{{ c }}' then -amount else 0 end)
            as spend_180d_{{ c | lower }}_pen{{ "," if not loop.last }}
        {% endfor %}
    from transactions
    group by customer_id
)

select * from aggregated
