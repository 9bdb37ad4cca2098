//! Shared helpers of the integration tests: a brute-force reference of the whole pipeline's
//! semantics, the services the tests start, the `sessionize` binary, and reading the tables back
//! to compare them with the reference.

#![allow(dead_code)] // each test binary uses its own subset

mod reference;
mod run;
mod services;
mod tables;

#[allow(unused_imports)] // likewise
pub use {reference::*, run::*, services::*, tables::*};
