//! Integration tests over real sockets on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;

mod auth;
mod churn;
mod frames;
mod limits;
mod multinode;
mod ops;
mod presence;
mod publish_api;
mod recovery;
mod sse;
