//! The ground floor: small helpers every layer may use and that use no
//! other layer: file-system rules (`fs`), numbers and hex for people
//! (`fmt`), `Read` helpers (`io`), directory locks (`lock`), what is said on stdout and stderr (`say`), progress display, text from outside made
//! safe to print (`text`), times (`time`), and shared blocks (`reflink`).
#![warn(missing_docs)]

#[macro_use]
pub mod say;

mod cores;
mod error;
pub mod fmt;
pub mod fs;
pub mod io;
pub mod lock;
pub mod progress;
mod reflink;
pub mod text;
pub mod time;

pub use cores::threads;
pub use error::{find_in_chain, is_full, Error};
pub use reflink::Cloner;
