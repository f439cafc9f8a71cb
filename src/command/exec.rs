//! The executor: from an argument vector to a reply.
//!
//! [`execute`] resolves the name in the command table (and, for container
//! commands such as `CLIENT`, the subcommand), checks the arity, and runs the
//! handler by kind: a `Read` after the node's read barrier for the session's
//! read policy, a `Write` by parsing it into an [`Op`] that the cluster
//! replicates (the reply comes from its apply), a `Server` command directly.
//! Refusals use Redis's exact texts, so clients and their tests see the
//! errors they expect.
//!
//! [`Node`] implements the front end's [`Executor`] with
//! [`execute_batch`], which runs a pipelined batch in order with two
//! savings: one read barrier covers a run of reads with no write between
//! them (they all arrived before the barrier was requested, so one barrier
//! is as fresh as one each), and a run of consecutive writes is replicated
//! as one batch (one log entry, applied in request order, all or none)
//! instead of each waiting for the previous commit. Every reply is encoded as soon as it exists, in the protocol the
//! session has at that moment (a `HELLO 3` mid-batch switches what follows).

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::args::Args;
use super::table::{self, CommandId, Handler};
use crate::cluster::Op;
use crate::node::Node;
use crate::server::state::Stats;
use crate::server::{Executor, Reply, Session};
use crate::telemetry::trace::ActiveSpan;
use opentelemetry::context::FutureExt as _;

/// A request resolved against the table, ready to run.
struct Resolved {
    /// Full name (`get`, `client|list`), for `CLIENT LIST`'s `cmd=`.
    name: &'static str,
    /// Where its calls are counted.
    id: CommandId,
    handler: Handler,
}

/// Runs one command for `session` on `node`.
pub async fn execute(node: &Node, session: &mut Session, argv: Vec<Bytes>) -> Reply {
    let mut barrier_done = false;
    match prepare(node, session, argv) {
        Prepared::Ready(reply) => reply,
        Prepared::Write(name, id, op) => {
            let started = Instant::now();
            let reply = submit_write(node, name, op).await;
            record(node, session, id, started, &reply);
            reply
        }
        Prepared::Run(resolved, args) => {
            run_local(node, session, resolved, args, &mut barrier_done).await
        }
    }
}

/// Runs a pipelined batch in order, encoding each reply into `out`.
pub async fn execute_batch(
    node: &Node,
    session: &mut Session,
    requests: &mut Vec<Vec<Bytes>>,
    out: &mut BytesMut,
) {
    let mut barrier_done = false;
    // Writes parsed but not yet submitted, with the ready replies (refusals)
    // that sit between them, kept in request order.
    let mut pending: Vec<Prepared> = Vec::new();
    for argv in requests.drain(..) {
        let prepared = prepare(node, session, argv);
        match prepared {
            Prepared::Write(..) => pending.push(prepared),
            Prepared::Ready(reply) if !pending.is_empty() => pending.push(Prepared::Ready(reply)),
            Prepared::Ready(reply) => reply.encode(session.reply_protocol(), out),
            Prepared::Run(resolved, args) => {
                if !pending.is_empty() {
                    submit_writes(node, session, &mut pending, out).await;
                    barrier_done = false;
                }
                let reply = run_local(node, session, resolved, args, &mut barrier_done).await;
                reply.encode(session.reply_protocol(), out);
            }
        }
    }
    if !pending.is_empty() {
        submit_writes(node, session, &mut pending, out).await;
    }
}

impl Executor for Node {
    fn execute_batch<'a>(
        &'a self,
        session: &'a mut Session,
        requests: &'a mut Vec<Vec<Bytes>>,
        out: &'a mut BytesMut,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        execute_batch(self, session, requests, out)
    }
}

enum Prepared {
    /// Answered without running (unknown command, arity, parse error).
    Ready(Reply),
    /// A write parsed into its operation (full name, counter id).
    Write(&'static str, CommandId, Op),
    /// A read or server command.
    Run(Resolved, Args),
}

/// Resolves, checks and (for writes) parses one request.
fn prepare(node: &Node, session: &mut Session, argv: Vec<Bytes>) -> Prepared {
    let stats = &session.server.stats;
    let resolved = match resolve(&argv) {
        Ok(r) => r,
        Err((id, reply)) => {
            // Refused before running: an error reply, but not a processed
            // command (Redis counts those in `call()`).
            count_error(stats, &reply);
            if let Some(c) = id.and_then(|id| stats.command_at(id)) {
                c.rejected_calls.fetch_add(1, Ordering::Relaxed);
            }
            return Prepared::Ready(reply);
        }
    };
    session.client.meta().last_cmd = resolved.name;
    let mut args = Args::new(argv);
    if let Handler::Write(parse) = resolved.handler {
        // The parse is the call when it fails: timed from here (reads the
        // clock only for writes; a read is timed where it runs).
        let started = Instant::now();
        return match parse(&mut args) {
            Ok(op) => Prepared::Write(resolved.name, resolved.id, op),
            Err(reply) => {
                // A parse error is the command's own reply, as in Redis: a
                // call that failed, counted like any other.
                record(node, session, resolved.id, started, &reply);
                Prepared::Ready(reply)
            }
        };
    }
    Prepared::Run(resolved, args)
}

/// Finds the command (and subcommand) and checks arity. On refusal, also
/// returns the id of the command when it is known, for its stats.
fn resolve(argv: &[Bytes]) -> Result<Resolved, (Option<CommandId>, Reply)> {
    let Some(name) = argv.first() else {
        return Err((None, Reply::error("ERR empty command")));
    };
    let Some(entry) = table::lookup_entry(name) else {
        return Err((None, unknown_command(argv)));
    };
    let spec = entry.spec;
    if argv.len() >= 2 && entry.is_container() {
        let Some((sub, id)) = entry.subcommand(&argv[1]) else {
            return Err((Some(entry.id), unknown_subcommand(spec.name, &argv[1])));
        };
        if !sub.arity_ok(argv.len()) {
            return Err((Some(id), wrong_arity(sub.full_name)));
        }
        return Ok(Resolved {
            name: sub.full_name,
            id,
            handler: sub.handler,
        });
    }
    if !spec.arity_ok(argv.len()) {
        return Err((Some(entry.id), wrong_arity(spec.name)));
    }
    Ok(Resolved {
        name: spec.name,
        id: entry.id,
        handler: spec.handler,
    })
}

/// Runs a read or server command.
async fn run_local(
    node: &Node,
    session: &mut Session,
    resolved: Resolved,
    mut args: Args,
    barrier_done: &mut bool,
) -> Reply {
    let started = Instant::now();
    let reply = match resolved.handler {
        Handler::Read(read) => {
            let barrier = if *barrier_done {
                Ok(())
            } else {
                read_barrier(node, session.readonly).await
            };
            match barrier {
                Ok(()) => {
                    // A READONLY pass is no barrier for a later READWRITE read.
                    *barrier_done = !session.readonly;
                    read(&node.store, &mut args, node.cluster.read_clock_ms())
                }
                Err(reply) => reply,
            }
        }
        Handler::Server(run) => run(node, session, &mut args),
        Handler::Admin(run) => run(node, args).await,
        // `prepare` turns every write into `Prepared::Write`.
        Handler::Write(_) => Reply::error("ERR internal error: write run as a local command"),
    };
    record(node, session, resolved.id, started, &reply);
    reply
}

/// Submits the pending run of writes as one batch (one log entry, applied
/// in request order, all or nothing) and encodes their replies, with the
/// refusals that sat between them, in request order.
async fn submit_writes(
    node: &Node,
    session: &Session,
    pending: &mut Vec<Prepared>,
    out: &mut BytesMut,
) {
    let started = Instant::now();
    let mut names = Vec::with_capacity(pending.len());
    let mut ids = Vec::with_capacity(pending.len());
    let mut ops = Vec::with_capacity(pending.len());
    let mut slots = Vec::with_capacity(pending.len());
    for p in pending.drain(..) {
        match p {
            Prepared::Write(name, id, op) => {
                names.push(name);
                ids.push(id);
                ops.push(op);
                slots.push(None);
            }
            Prepared::Ready(reply) => slots.push(Some(reply)),
            Prepared::Run(..) => slots.push(Some(Reply::error(
                "ERR internal error: local command in a write run",
            ))),
        }
    }
    let span = command_span(node, &names, || ops.iter().map(Op::key_count).sum());
    let outcome = match &span {
        None => node.cluster.write_batch(ops).await,
        Some(span) => {
            node.cluster
                .write_batch(ops)
                .with_context(span.context().clone())
                .await
        }
    };
    if let (Some(span), Err(e)) = (&span, &outcome) {
        span.fail(e.resp_prefix(), &e.to_string());
    }
    let mut results: Box<dyn Iterator<Item = Reply> + Send> = match outcome {
        Ok(results) => Box::new(results.into_iter().map(Reply::from)),
        Err(e) => {
            let reply = Reply::from(e);
            Box::new(std::iter::repeat_n(reply, names.len()))
        }
    };
    let mut ids = ids.into_iter();
    for slot in slots {
        let reply = match slot {
            Some(ready) => ready,
            None => {
                let reply = results
                    .next()
                    .unwrap_or_else(|| Reply::error("ERR internal error: missing write result"));
                if let Some(id) = ids.next() {
                    record(node, session, id, started, &reply);
                }
                reply
            }
        };
        reply.encode(session.reply_protocol(), out);
    }
}

/// Counts one executed command, in INFO's stats and in the node's metrics.
/// Both keep their per-command counters in arrays indexed by `id`: no
/// name is hashed and no lock taken here.
fn record(node: &Node, session: &Session, id: CommandId, started: Instant, reply: &Reply) {
    let stats = &session.server.stats;
    let now = Instant::now();
    let took = now.duration_since(started);
    let failed = reply.is_error();
    node.telemetry.metrics.observe_command_at(id, took, failed);
    stats.record_call(id, took, failed);
    count_error(stats, reply);
    stats.sample_rates(now);
}

/// Counts `reply` in `total_error_replies` and by prefix, if it is an error.
fn count_error(stats: &Stats, reply: &Reply) {
    if let Reply::Error(message) = reply {
        stats.note_error(message);
    }
}

/// Waits until local state is fresh enough for a linearizable read (or not
/// at all under `READONLY`).
async fn read_barrier(node: &Node, local_only: bool) -> Result<(), Reply> {
    node.cluster
        .read_barrier(local_only)
        .await
        .map_err(Reply::from)
}

/// Replicates one write and turns its outcome into the reply.
async fn submit_write(node: &Node, name: &'static str, op: Op) -> Reply {
    let span = command_span(node, &[name], || op.key_count());
    let outcome = match &span {
        None => node.cluster.write(op).await,
        Some(span) => {
            node.cluster
                .write(op)
                .with_context(span.context().clone())
                .await
        }
    };
    let reply = match outcome {
        Ok(result) => Reply::from(result),
        Err(e) => Reply::from(e),
    };
    if let (Some(span), Reply::Error(text)) = (&span, &reply) {
        let text = String::from_utf8_lossy(text);
        span.fail(text.split(' ').next().unwrap_or_default(), &text);
    }
    reply
}

/// The root span of a write run (one command, or a pipelined run of them
/// replicated as one entry) when tracing is on and samples it; the write
/// then runs in its context, which carries the trace to every node.
fn command_span(
    node: &Node,
    names: &[&'static str],
    keys: impl FnOnce() -> usize,
) -> Option<ActiveSpan> {
    let tracer = &node.telemetry.tracer;
    if !tracer.is_on() {
        return None;
    }
    // A run of different commands is named BATCH alone, as OpenTelemetry's
    // database conventions name mixed batches.
    let name = names
        .first()
        .filter(|first| names.iter().all(|n| n == *first))
        .copied();
    tracer.command(name, names.len(), keys())
}

/// This node's clock in milliseconds since the Unix epoch, for hiding
/// expired keys on reads.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ERR unknown command 'foo', with args beginning with: 'a' 'b' `, with
/// Redis's 128-byte truncations.
fn unknown_command(argv: &[Bytes]) -> Reply {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str(&argv[0], 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut args_len = 0usize;
    for arg in &argv[1..] {
        if args_len >= 128 {
            break;
        }
        let arg = c_str(arg, 128 - args_len);
        msg.push(b'\'');
        msg.extend_from_slice(arg);
        msg.extend_from_slice(b"' ");
        args_len += arg.len() + 3;
    }
    Reply::Error(Bytes::from(msg))
}

/// `ERR unknown subcommand 'foo'. Try CLIENT HELP.`
fn unknown_subcommand(container: &str, sub: &[u8]) -> Reply {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(sub, 128));
    msg.extend_from_slice(b"'. Try ");
    msg.extend_from_slice(container.to_ascii_uppercase().as_bytes());
    msg.extend_from_slice(b" HELP.");
    Reply::Error(Bytes::from(msg))
}

/// `ERR wrong number of arguments for 'get' command`.
#[must_use]
pub fn wrong_arity(full_name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{full_name}' command"
    ))
}

/// What C's `%.Ns` prints of `b`: up to the first NUL, at most `max` bytes.
fn c_str(b: &[u8], max: usize) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(max);
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn refusal(parts: &[&str]) -> Reply {
        match resolve(&argv(parts)) {
            Ok(r) => panic!("{parts:?} resolved to {}", r.name),
            Err((_, reply)) => reply,
        }
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        assert_eq!(
            refusal(&["foo", "a", "b"]),
            Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            refusal(&["foo"]),
            Reply::error("ERR unknown command 'foo', with args beginning with: ")
        );
        let long = "x".repeat(200);
        let Reply::Error(msg) = refusal(&[&long, &long, "c"]) else {
            panic!("not an error");
        };
        let expected = format!(
            "ERR unknown command '{}', with args beginning with: '{}' ",
            "x".repeat(128),
            "x".repeat(128)
        );
        assert_eq!(std::str::from_utf8(&msg).unwrap(), expected);
    }

    #[test]
    fn arity_errors_name_the_command_and_subcommand() {
        assert_eq!(
            refusal(&["ECHO"]),
            Reply::error("ERR wrong number of arguments for 'echo' command")
        );
        assert_eq!(
            refusal(&["client"]),
            Reply::error("ERR wrong number of arguments for 'client' command")
        );
        assert_eq!(
            refusal(&["CLIENT", "SETNAME"]),
            Reply::error("ERR wrong number of arguments for 'client|setname' command")
        );
        assert_eq!(
            refusal(&["config", "get"]),
            Reply::error("ERR wrong number of arguments for 'config|get' command")
        );
    }

    #[test]
    fn unknown_subcommand_points_at_help() {
        assert_eq!(
            refusal(&["client", "foo"]),
            Reply::error("ERR unknown subcommand 'foo'. Try CLIENT HELP.")
        );
        assert_eq!(
            refusal(&["COMMAND", "bar", "x"]),
            Reply::error("ERR unknown subcommand 'bar'. Try COMMAND HELP.")
        );
    }

    #[test]
    fn resolution_uses_full_names() {
        let ok = |parts: &[&str]| resolve(&argv(parts)).map(|r| r.name).ok();
        assert_eq!(ok(&["PiNg"]), Some("ping"));
        assert_eq!(ok(&["client", "SETNAME", "x"]), Some("client|setname"));
        assert_eq!(ok(&["command"]), Some("command"));
        assert_eq!(ok(&["command", "docs", "get"]), Some("command|docs"));
    }

    #[test]
    fn every_counted_name_has_stats() {
        let stats = crate::server::state::Stats::new();
        assert!(stats.command("client|list").is_some());
        assert!(stats.command("ping").is_some());
        // The id a request resolves to counts under the request's name.
        for parts in [&["ping"][..], &["client", "list"], &["CONFIG", "GET", "x"]] {
            let resolved = resolve(&argv(parts)).ok().unwrap();
            assert!(std::ptr::eq(
                stats.command_at(resolved.id).unwrap(),
                stats.command(resolved.name).unwrap()
            ));
        }
        let Err((Some(id), _)) = resolve(&argv(&["client", "setname"])) else {
            panic!("resolved");
        };
        assert_eq!(id.name(), "client|setname");
    }
}
