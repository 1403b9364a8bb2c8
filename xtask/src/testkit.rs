//! testkit (stub, being written): a loopback GitHub for tests and the benchmark.
