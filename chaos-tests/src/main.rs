//! `nimbus-chaos`.

fn main() {}
