//! ballast-bench: load generator for MCP over Streamable HTTP (placeholder until written).
fn main() {}
