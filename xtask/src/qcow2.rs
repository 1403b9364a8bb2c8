//! qcow2 (stub)
