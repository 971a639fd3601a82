-- Recency, frequency and monetary value of each customer's transactions over 30 and 90 days.
with transactions as (
    select
        customer_id,
        transaction_type,
        amount,
        booking_date,
        {{ dbt.datediff('booking_date', business_date(), 'day') }} as days_ago
    from {{ ref('stg_core_banking__transactions') }}
),

aggregated as (
    select
        customer_id,
        min(days_ago) as days_since_last_tx,
        sum(case when days_ago < 30 then 1 else 0 end) as tx_count_30d,
        sum(case when days_ago < 90 then 1 else 0 end) as tx_count_90d,
        sum(case when days_ago < 30 and amount < 0 then -amount else 0 end) as spend_30d_pen,
        sum(case when days_ago < 90 and amount < 0 then -amount else 0 end) as spend_90d_pen,
        sum(case when days_ago < 90 and transaction_type = 'SALARY_DEPOSIT' then amount else 0 end)
            as salary_90d_pen,
        sum(case when days_ago < 90 and transaction_type = 'POS_PURCHASE' then 1 else 0 end) as pos_count_90d,
        sum(case when days_ago < 90 and transaction_type = 'WALLET_P2P' then 1 else 0 end) as wallet_count_90d
    from transactions
    where days_ago < 90
    group by customer_id
)

select * from aggregated
