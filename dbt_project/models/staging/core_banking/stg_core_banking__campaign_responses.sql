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
        contact_date,
        _business_date as loaded_for_date  -- the business date of the load that last wrote the row
    from source
)

select * from renamed
