//! quiver-bench: the benchmark harness (being written; see BENCHMARKS.md).
fn main() {}
