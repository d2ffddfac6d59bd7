//! `hookrace check-receiver`: grades a webhook receiver against Polar's contract.
