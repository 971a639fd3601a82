{{ config(materialized='incremental', unique_key='as_of_date', on_schema_change='append_new_columns') }}
-- One row per customer per as-of date: the features the propensity model reads.
with customers as (
    select * from {{ ref('stg_core_banking__customers') }}
    where as_of_date = {{ business_date() }}
),

accounts as (
    select * from {{ ref('int_accounts_aggregated_to_customers') }}
),

transactions as (
    select * from {{ ref('int_transactions_aggregated_to_customers') }}
),

contacts as (
    select * from {{ ref('int_contacts_aggregated_to_customers') }}
),

joined as (
    select
        -- keys
        {{ business_date() }} as as_of_date,
        c.customer_id,
        -- profile
        cast({{ years_between('c.birth_date', business_date()) }} as integer) as age,
        cast({{ dbt.datediff('c.created_on', business_date(), 'day') }} as integer) as tenure_days,
        c.segment,
        c.income_band,
        c.region,
        c.consent_sms,
        c.consent_email,
        c.consent_phone,
        c.consent_push,
        c.consent_social,
        -- holdings and balances
        coalesce(a.n_products, 0) as n_products,
        cast(coalesce(a.total_balance_pen, 0) as decimal(18, 2)) as total_balance_pen,
        cast(coalesce(a.total_debt_pen, 0) as decimal(18, 2)) as total_debt_pen,
        coalesce(a.has_savings, 0) as has_savings,
        coalesce(a.has_checking, 0) as has_checking,
        coalesce(a.has_cts, 0) as has_cts,
        coalesce(a.has_term_deposit, 0) as has_term_deposit,
        coalesce(a.has_credit_card, 0) as has_credit_card,
        coalesce(a.has_personal_loan, 0) as has_personal_loan,
        coalesce(a.has_mortgage, 0) as has_mortgage,
        coalesce(a.has_insurance, 0) as has_insurance,
        {% for p in var('products') | map('lower') %}
        cast(coalesce(a.balance_{{ p }}_pen, 0) as decimal(18, 2)) as balance_{{ p }}_pen,
        {% endfor %}
        -- transactions
        coalesce(t.tx_count_30d, 0) as tx_count_30d,
        coalesce(t.tx_count_90d, 0) as tx_count_90d,
        cast(coalesce(t.spend_30d_pen, 0) as decimal(18, 2)) as spend_30d_pen,
        cast(coalesce(t.spend_90d_pen, 0) as decimal(18, 2)) as spend_90d_pen,
        cast(coalesce(t.salary_90d_pen, 0) as decimal(18, 2)) as salary_90d_pen,
        coalesce(t.tx_count_180d, 0) as tx_count_180d,
        cast(coalesce(t.spend_180d_pen, 0) as decimal(18, 2)) as spend_180d_pen,
        cast(coalesce(t.salary_180d_pen, 0) as decimal(18, 2)) as salary_180d_pen,
        coalesce(t.salary_count_90d, 0) as salary_count_90d,
        coalesce(t.salary_count_180d, 0) as salary_count_180d,
        {% for c in var('merchant_categories') | map('lower') %}
        cast(coalesce(t.spend_180d_{{ c }}_pen, 0) as decimal(18, 2)) as spend_180d_{{ c }}_pen,
        {% endfor %}
        coalesce(t.pos_count_90d, 0) as pos_count_90d,
        coalesce(t.wallet_count_90d, 0) as wallet_count_90d,
        coalesce(t.accounts_transacted_180d, 0) as accounts_transacted_180d,
        coalesce(t.days_since_last_tx, 999) as days_since_last_tx,
        -- contact history
        coalesce(h.contacts_365d, 0) as contacts_365d,
        coalesce(h.accepts_365d, 0) as accepts_365d,
        coalesce(h.declines_365d, 0) as declines_365d,
        coalesce(h.days_since_last_contact, 999) as days_since_last_contact
    from customers as c
    left join accounts as a on a.customer_id = c.customer_id
    left join transactions as t on t.customer_id = c.customer_id
    left join contacts as h on h.customer_id = c.customer_id
)

select * from joined
