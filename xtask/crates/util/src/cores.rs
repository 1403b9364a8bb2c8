//! How many threads a parallel stage uses.

/// Threads for a request of `n`: `n` itself, or one per core for 0.
pub fn threads(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
