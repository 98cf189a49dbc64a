//! Integration tests of `chorus-auth`: real tokens, real keys (fixtures made
//! with openssl) and a real HTTP server for key sets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;
mod jwks;
mod secret;
mod verify;
