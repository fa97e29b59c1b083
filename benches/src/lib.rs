//! Bench helpers.
#![forbid(unsafe_code)]
