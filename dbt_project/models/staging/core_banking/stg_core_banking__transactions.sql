with source as (
    select * from {{ source('core_banking', 'transactions') }}
),

renamed as (
    select
        -- ids
        transaction_id,
        account_id,
        customer_id,
        -- strings
        type as transaction_type,
        merchant_category,
        currency,
        -- numerics
        cast(amount as decimal(14, 2)) as amount,
        -- dates
        booking_date
    from source
)

select * from renamed
