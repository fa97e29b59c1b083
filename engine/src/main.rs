//! shardtel binary.
fn main() {}
