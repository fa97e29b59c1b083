//! shardtel-tls end to end: real TCP sockets on 127.0.0.1, glommio executors, certificates made
//! by rcgen and written to files as an operator would.

mod files;
mod handshake;
mod rotation;
mod support;
mod tokens;
