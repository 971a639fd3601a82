with source as (
    select * from {{ source('core_banking', 'campaign_responses') }}
),

renamed as (
    select
        -- ids
        response_id,
        customer_id,
        campaign_id,
        -- strings
        channel,
        response,
        -- dates
        contact_date
    from source
)

select * from renamed
