-- The customers of the run's own load (its business date): what the customer-history snapshot
-- compares with the versions it holds. No birth date: the history keeps no date of birth (the
-- marts carry the age as of each business date instead).
select
    customer_id,
    document_type,
    document_number_masked,
    full_name_masked,
    segment,
    income_band,
    region,
    district,
    consent_sms,
    consent_email,
    consent_phone,
    consent_push,
    consent_social,
    created_on,
    updated_on,
    as_of_date
from {{ ref('stg_core_banking__customers') }}
where as_of_date = {{ business_date() }}
