//! A hardened edge (issue 16), through the real process: hostile clients, crashes and bad input
//! never take the service away, and what shardtel writes to disk is private.

mod clients;
mod data;
mod formats;
