with source as (
    select * from {{ ref('contact_policies') }}
),

renamed as (
    select
        -- strings
        channel,
        -- numerics
        max_contacts_30d,
        suppress_days_after_decline,
        daily_capacity
    from source
)

select * from renamed
