//! The `quiver` command line.
fn main() {}
