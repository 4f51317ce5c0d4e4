"""The service's data shapes: `records` (what the data layer returns and takes: plain,
immutable records) and `schemas` (the API's request and response bodies)."""
