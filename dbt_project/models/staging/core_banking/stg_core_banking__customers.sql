with source as (
    select * from {{ source('core_banking', 'customers') }}
),

renamed as (
    select
        -- ids
        customer_id,
        document_type,
        -- personal data, masked here so that no later model holds it in clear
        {{ mask_document('document_number') }} as document_number_masked,
        {{ mask_name('full_name') }} as full_name_masked,
        -- strings
        segment,
        income_band,
        region,
        district,
        -- consents (0/1)
        cast(consent_sms as integer) as consent_sms,
        cast(consent_email as integer) as consent_email,
        cast(consent_phone as integer) as consent_phone,
        cast(consent_push as integer) as consent_push,
        cast(consent_social as integer) as consent_social,
        -- dates
        birth_date,
        created_on,
        updated_on,
        _business_date as as_of_date
    from source
)

select * from renamed
