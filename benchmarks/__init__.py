"""``make bench-<area>``: one module per area (``extract``, ``dbt``, ``scoring``, ``serving``) and what
they share (``report``). Nothing in the product packages imports them."""
