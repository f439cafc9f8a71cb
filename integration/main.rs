//! Black-box tests of the `raftis` binary: several real processes on free
//! ports, driven by real clients (`redis-cli`, `redis-benchmark`, redis-py
//! and the `redis` crate), with process-level faults (SIGKILL of one node or
//! of all of them, restarts from the data dir) and startup errors that only
//! a real process shows (exit codes, stderr, ports in use).
//!
//! [`harness`] runs the clusters, [`tools`] runs the external programs; each
//! other module is one family of tests. Tests run in parallel threads, so
//! each one starts its own cluster on its own ports and temp dirs, and every
//! wait is bounded. `redis-cli`, `redis-benchmark` and python's `redis`
//! module must be installed (`.ci/run` installs them): a missing one fails
//! the tests that need it rather than skipping them.
//!
//! Run with `cargo test --test integration`; set `INTEGRATION_KEEP_DIR=1` to
//! keep a failed test's data dirs and whole node logs.

mod allocator;
mod backup;
mod checker;
mod disk;
mod faults;
mod harness;
mod health;
mod history;
mod lease;
mod membership;
mod otlp_receiver;
mod proxy;
mod read_deadline;
mod redis_benchmark;
mod redis_cli;
mod redis_py;
mod scenarios;
mod startup;
mod telemetry;
mod tools;
mod transfer;
mod workload;
