//! Guest configuration, build methods and lifecycle.

#![forbid(unsafe_code)]
