//! Hubs over the Redis engine when Redis fails: a real `redis-server` per
//! test (killed and restarted), several nodes of one deployment in one
//! process. The hub tests that hold on every engine are chorus-core's
//! (`tests/hub`, run on memory and on the suite's Redis).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

#[allow(dead_code)]
#[path = "../../../core/tests/hub/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../engine/support.rs"]
mod support;

mod cluster;
