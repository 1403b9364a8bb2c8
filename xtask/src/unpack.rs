//! unpack (stub)
