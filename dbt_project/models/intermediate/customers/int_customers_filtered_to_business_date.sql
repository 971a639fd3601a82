-- The customers of the run's own load (its business date): what the customer-history snapshot
-- compares with the versions it holds.
select * from {{ ref('stg_core_banking__customers') }}
where as_of_date = {{ business_date() }}
