//! assets (stub)
