//! Integration tests of `chorus-auth`: real tokens, real keys (fixtures made
//! with openssl) and a real HTTP server for key sets.

mod common;
mod jwks;
mod secret;
mod verify;
