//! download (stub)
