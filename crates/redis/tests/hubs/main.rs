//! Hubs over the Redis engine, as the hub tests run them over the in-memory
//! one, but with real time and a real `redis-server` per test: several
//! nodes of one deployment in one process.

#[allow(dead_code)]
#[path = "../../../core/tests/hub/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../engine/support.rs"]
mod support;

mod cluster;
