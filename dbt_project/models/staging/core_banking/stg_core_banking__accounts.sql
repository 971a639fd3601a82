with source as (
    select * from {{ source('core_banking', 'accounts') }}
),

renamed as (
    select
        -- ids
        account_id,
        customer_id,
        -- strings
        product,
        currency,
        status,
        -- numerics
        cast(balance as decimal(16, 2)) as balance,
        -- dates
        opened_on,
        _business_date as as_of_date
    from source
)

select * from renamed
