//! Connection and server commands: PING, ECHO, QUIT, HELLO, AUTH, SELECT,
//! CLIENT, COMMAND, CONFIG, INFO (written in `info.rs`), TIME, READONLY,
//! READWRITE, SHUTDOWN.
//!
//! None of them touches replicated data, so all but SHUTDOWN (an `Admin`
//! handler: it waits for the node to stop) are `Server` handlers: they
//! read or change the connection's [`Session`], the front end's shared
//! [`ServerState`](crate::server::ServerState) (reached through the session:
//! client registry, runtime settings, counters) and the node's Raft status.
//! They answer what real clients send on connect (`HELLO`, `CLIENT SETINFO`,
//! `SELECT 0`, `COMMAND DOCS`, `CONFIG GET save`...) the way Redis 7.2 does,
//! with Redis's error texts. Container commands (`CLIENT`, `COMMAND`,
//! `CONFIG`) list their subcommands in [`CONTAINERS`]; the executor resolves
//! and arity-checks the subcommand before its handler runs.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::args::{parse_i64, syntax_error};
use super::table::{self, AdminFuture, CommandSpec, Flags, Handler, SubcommandSpec};
use super::Args;
use crate::node::{Node, StopMode};
use crate::server::{Reply, Session};

/// The Redis version we answer as, for clients that gate features on it.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

const fn server(
    name: &'static str,
    arity: i32,
    flags: Flags,
    run: fn(&Node, &mut Session, &mut Args) -> Reply,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: Handler::Server(run),
    }
}

const fn sub(
    name: &'static str,
    full_name: &'static str,
    arity: i32,
    flags: Flags,
    run: fn(&Node, &mut Session, &mut Args) -> Reply,
) -> SubcommandSpec {
    SubcommandSpec {
        name,
        full_name,
        arity,
        flags,
        handler: Handler::Server(run),
    }
}

const FAST_CONN: Flags = Flags::FAST.with(Flags::CONNECTION);

/// The server family's commands.
pub const COMMANDS: &[CommandSpec] = &[
    server("ping", -1, FAST_CONN, ping),
    server("echo", 2, FAST_CONN, echo),
    server("quit", -1, FAST_CONN, quit),
    server("hello", -1, FAST_CONN, hello),
    server("auth", -2, FAST_CONN, auth),
    server("select", 2, FAST_CONN, select),
    server("readonly", 1, FAST_CONN, readonly),
    server("readwrite", 1, FAST_CONN, readwrite),
    server("time", 1, Flags::FAST, time),
    server("info", -1, Flags(0), super::info::info),
    server(
        "client",
        -2,
        Flags::CONNECTION,
        container_without_subcommand,
    ),
    server("command", -1, Flags::CONNECTION, command_all),
    server("config", -2, Flags::ADMIN, container_without_subcommand),
    CommandSpec::new(
        "shutdown",
        -1,
        Flags::ADMIN,
        (0, 0, 0),
        Handler::Admin(shutdown),
    ),
];

/// Container commands and their subcommands.
pub const CONTAINERS: &[(&str, &[SubcommandSpec])] = &[
    ("client", CLIENT_SUBCOMMANDS),
    ("command", COMMAND_SUBCOMMANDS),
    ("config", CONFIG_SUBCOMMANDS),
];

const CLIENT_SUBCOMMANDS: &[SubcommandSpec] = &[
    sub("setname", "client|setname", 3, FAST_CONN, client_setname),
    sub("getname", "client|getname", 2, FAST_CONN, client_getname),
    sub("setinfo", "client|setinfo", 4, FAST_CONN, client_setinfo),
    sub("id", "client|id", 2, FAST_CONN, client_id),
    sub("info", "client|info", 2, FAST_CONN, client_info),
    sub("list", "client|list", -2, Flags::CONNECTION, client_list),
    sub("help", "client|help", 2, FAST_CONN, client_help),
];

const COMMAND_SUBCOMMANDS: &[SubcommandSpec] = &[
    sub(
        "count",
        "command|count",
        2,
        Flags::CONNECTION,
        command_count,
    ),
    sub("list", "command|list", -2, Flags::CONNECTION, command_list),
    sub("info", "command|info", -2, Flags::CONNECTION, command_info),
    sub("docs", "command|docs", -2, Flags::CONNECTION, command_docs),
    sub(
        "getkeys",
        "command|getkeys",
        -3,
        Flags::CONNECTION,
        command_getkeys,
    ),
    sub("help", "command|help", 2, Flags::CONNECTION, command_help),
];

const CONFIG_SUBCOMMANDS: &[SubcommandSpec] = &[
    sub("get", "config|get", -3, Flags::ADMIN, config_get),
    sub("set", "config|set", -4, Flags::ADMIN, config_set),
    sub(
        "resetstat",
        "config|resetstat",
        2,
        Flags::ADMIN,
        config_resetstat,
    ),
    sub("rewrite", "config|rewrite", 2, Flags::ADMIN, config_rewrite),
    sub("help", "config|help", 2, Flags::ADMIN, config_help),
];

// ---------------------------------------------------------------------------
// Connection commands

fn ping(_: &Node, session: &mut Session, args: &mut Args) -> Reply {
    if args.remaining() > 1 {
        return crate::command::exec::wrong_arity("ping");
    }
    match args.try_next() {
        Some(msg) => Reply::Bulk(msg),
        None => {
            let _ = session;
            Reply::simple("PONG")
        }
    }
}

fn echo(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    args.next_bytes().map_or_else(|e| e, Reply::Bulk)
}

/// The connection answers QUIT itself and closes; this runs only when the
/// executor is driven without a connection.
fn quit(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    Reply::ok()
}

fn hello(node: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let mut version = None;
    if let Some(v) = args.try_next() {
        let Some(v) = parse_i64(&v) else {
            return Reply::error("ERR Protocol version is not an integer or out of range");
        };
        if !(2..=3).contains(&v) {
            return Reply::error("NOPROTO unsupported protocol version");
        }
        version = u8::try_from(v).ok();
    }
    let mut name = None;
    let rest = args.rest();
    let mut i = 0;
    while i < rest.len() {
        let more = rest.len() - 1 - i;
        let opt = &rest[i];
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            if let Err(e) = check_credentials(&rest[i + 1], &rest[i + 2]) {
                return e;
            }
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(rest[i + 1].clone());
            i += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(opt);
            msg.push(b'\'');
            return Reply::Error(Bytes::from(msg));
        }
    }
    if let Some(name) = name {
        if let Err(e) = set_client_name(session, name) {
            return e;
        }
    }
    if let Some(v) = version {
        session.protocol = v;
        session.client.meta().resp = v;
    }
    let role = match super::info::raft_view(node) {
        Some(view) if view.role != "leader" => "replica",
        _ => "master",
    };
    Reply::Map(vec![
        (Reply::bulk_static("server"), Reply::bulk_static("redis")),
        (
            Reply::bulk_static("version"),
            Reply::bulk_static(REDIS_COMPAT_VERSION),
        ),
        (
            Reply::bulk_static("proto"),
            Reply::Integer(i64::from(session.protocol)),
        ),
        (
            Reply::bulk_static("id"),
            Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        ),
        (Reply::bulk_static("mode"), Reply::bulk_static("standalone")),
        (Reply::bulk_static("role"), Reply::bulk_static(role)),
        (Reply::bulk_static("modules"), Reply::Array(Vec::new())),
    ])
}

/// There are no users or passwords: the `default` user accepts any
/// password, as Redis's does when `requirepass` is unset.
fn check_credentials(user: &[u8], _password: &[u8]) -> Result<(), Reply> {
    if user == b"default" {
        Ok(())
    } else {
        Err(Reply::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

fn auth(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    match rest.as_slice() {
        [_password] => Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        [user, password] => check_credentials(user, password).map_or_else(|e| e, |()| Reply::ok()),
        _ => syntax_error(),
    }
}

fn select(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let db = match args.next_i64() {
        Ok(db) => db,
        Err(e) => return e,
    };
    // One keyspace: Raft replicates one state machine.
    if db == 0 {
        Reply::ok()
    } else if i32::try_from(db).is_err() {
        // Redis parses the index as an int and names the range.
        Reply::error("ERR value is out of range, value must between -2147483648 and 2147483647")
    } else {
        Reply::error("ERR DB index is out of range")
    }
}

fn readonly(_: &Node, session: &mut Session, _: &mut Args) -> Reply {
    session.readonly = true;
    Reply::ok()
}

fn readwrite(_: &Node, session: &mut Session, _: &mut Args) -> Reply {
    session.readonly = false;
    Reply::ok()
}

fn time(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}

// ---------------------------------------------------------------------------
// SHUTDOWN

/// What `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]` asks for. Data is
/// always durable here, so SAVE and NOSAVE change nothing, and no save can
/// fail, so FORCE has nothing to override; all are accepted as Redis parses
/// them.
#[derive(Debug, PartialEq, Eq)]
struct ShutdownOptions {
    /// Skip the leadership handoff.
    now: bool,
    /// Cancel a shutdown in progress instead.
    abort: bool,
}

/// Redis's parsing: any order, repeats allowed, case-insensitive; ABORT
/// with anything else, or SAVE with NOSAVE, is a syntax error.
fn parse_shutdown(args: &mut Args) -> Result<ShutdownOptions, Reply> {
    let (mut save, mut nosave, mut now, mut force, mut abort) = (false, false, false, false, false);
    while let Some(arg) = args.try_next() {
        let flag = match arg.to_ascii_lowercase().as_slice() {
            b"save" => &mut save,
            b"nosave" => &mut nosave,
            b"now" => &mut now,
            b"force" => &mut force,
            b"abort" => &mut abort,
            _ => return Err(syntax_error()),
        };
        *flag = true;
    }
    if (abort && (save || nosave || now || force)) || (save && nosave) {
        return Err(syntax_error());
    }
    Ok(ShutdownOptions { now, abort })
}

/// `SHUTDOWN`: stops the node gracefully (a leader hands leadership over
/// first; `NOW` skips that) and, as in Redis, closes the connection without
/// a reply once it does. The connection runs it in a batch of its own
/// (`server::connection`), so the replies to requests pipelined before it
/// are written before it parks; those after it never run. `ABORT` has no
/// handoff wait to cancel in progress: it answers `-ERR No shutdown in
/// progress.`, or, while one is, that it cannot be aborted.
fn shutdown(node: &Node, mut args: Args) -> AdminFuture<'_> {
    Box::pin(async move {
        let options = match parse_shutdown(&mut args) {
            Ok(options) => options,
            Err(reply) => return reply,
        };
        if options.abort {
            return if node.stop.requested().is_some() {
                Reply::error("ERR the shutdown in progress cannot be aborted")
            } else {
                Reply::error("ERR No shutdown in progress.")
            };
        }
        let mode = if options.now {
            StopMode::Immediate
        } else {
            StopMode::Graceful
        };
        match node.stop.request_and_park(mode).await {}
    })
}

/// `CLIENT` or `CONFIG` with no subcommand never reaches here (arity -2);
/// kept so the table entry has a handler.
fn container_without_subcommand(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    crate::command::exec::wrong_arity(&String::from_utf8_lossy(args.name()).to_lowercase())
}

// ---------------------------------------------------------------------------
// CLIENT

/// Redis's rule for names and library attributes: printable, no spaces.
fn valid_client_attr(b: &[u8]) -> bool {
    b.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn set_client_name(session: &mut Session, name: Bytes) -> Result<(), Reply> {
    if !valid_client_attr(&name) {
        return Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    let name = (!name.is_empty()).then_some(name);
    session.client.meta().name.clone_from(&name);
    session.name = name;
    Ok(())
}

fn client_setname(_: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let _ = args.next_bytes();
    match args.next_bytes() {
        Ok(name) => set_client_name(session, name).map_or_else(|e| e, |()| Reply::ok()),
        Err(e) => e,
    }
}

fn client_getname(_: &Node, session: &mut Session, _: &mut Args) -> Reply {
    session.name.clone().map_or(Reply::Null, Reply::Bulk)
}

fn client_setinfo(_: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    let [_, attr, value] = rest.as_slice() else {
        return crate::command::exec::wrong_arity("client|setinfo");
    };
    let is_name = attr.eq_ignore_ascii_case(b"lib-name");
    if !is_name && !attr.eq_ignore_ascii_case(b"lib-ver") {
        let mut msg = b"ERR Unrecognized option '".to_vec();
        msg.extend_from_slice(attr);
        msg.push(b'\'');
        return Reply::Error(Bytes::from(msg));
    }
    if !valid_client_attr(value) {
        let mut msg = b"ERR ".to_vec();
        msg.extend_from_slice(attr);
        msg.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
        return Reply::Error(Bytes::from(msg));
    }
    let value = (!value.is_empty()).then(|| value.clone());
    let mut meta = session.client.meta();
    if is_name {
        meta.lib_name = value;
    } else {
        meta.lib_ver = value;
    }
    Reply::ok()
}

fn client_id(_: &Node, session: &mut Session, _: &mut Args) -> Reply {
    Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX))
}

fn client_info(_: &Node, session: &mut Session, _: &mut Args) -> Reply {
    Reply::text(session.client.info_line(Instant::now()))
}

fn client_list(_: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 1;
    while i < rest.len() {
        if rest[i].eq_ignore_ascii_case(b"type") && i + 1 < rest.len() {
            let kind = &rest[i + 1];
            if !kind.eq_ignore_ascii_case(b"normal")
                && !kind.eq_ignore_ascii_case(b"master")
                && !kind.eq_ignore_ascii_case(b"replica")
                && !kind.eq_ignore_ascii_case(b"slave")
                && !kind.eq_ignore_ascii_case(b"pubsub")
            {
                let mut msg = b"ERR Unknown client type '".to_vec();
                msg.extend_from_slice(kind);
                msg.push(b'\'');
                return Reply::Error(Bytes::from(msg));
            }
            if !kind.eq_ignore_ascii_case(b"normal") {
                ids = Some(Vec::new());
            }
            i += 2;
        } else if rest[i].eq_ignore_ascii_case(b"id") && i + 1 < rest.len() {
            let mut wanted = Vec::new();
            for id in &rest[i + 1..] {
                match parse_i64(id)
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|&n| n > 0)
                {
                    Some(n) => wanted.push(n),
                    None => return Reply::error("ERR Invalid client ID"),
                }
            }
            ids = Some(match ids {
                Some(existing) if existing.is_empty() => existing,
                _ => wanted,
            });
            i = rest.len();
        } else {
            return syntax_error();
        }
    }
    let now = Instant::now();
    let mut text = Vec::new();
    for client in session.server.clients() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&client.id)) {
            text.extend_from_slice(&client.info_line(now));
        }
    }
    Reply::text(text)
}

fn help(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|l| Reply::simple(l)).collect())
}

fn client_help(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    help(&[
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "LIST [options ...]",
        "    Return information about client connections. Options:",
        "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
        "      Return clients of specified type.",
        "    * ID <client-id> [<client-id> ...]",
        "      Return clients with the given IDs.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "SETINFO <option> <value>",
        "    Set client meta attr. Options are:",
        "    * LIB-NAME: the client lib name.",
        "    * LIB-VER: the client lib version.",
        "HELP",
        "    Print this help.",
    ])
}

// ---------------------------------------------------------------------------
// COMMAND

fn flag_names(flags: Flags) -> Vec<Reply> {
    let mut out = Vec::new();
    for (flag, names) in [
        (Flags::WRITE, &["write"][..]),
        (Flags::READONLY, &["readonly"][..]),
        (Flags::DENYOOM, &["denyoom"][..]),
        (Flags::ADMIN, &["admin", "noscript"][..]),
        (Flags::CONNECTION, &["loading", "stale"][..]),
        (Flags::FAST, &["fast"][..]),
    ] {
        if flags.contains(flag) {
            out.extend(names.iter().map(|n| Reply::simple(n)));
        }
    }
    out
}

fn acl_categories(flags: Flags) -> Vec<Reply> {
    let mut out = Vec::new();
    for (flag, name) in [
        (Flags::WRITE, "@write"),
        (Flags::READONLY, "@read"),
        (Flags::ADMIN, "@admin"),
        (Flags::CONNECTION, "@connection"),
    ] {
        if flags.contains(flag) {
            out.push(Reply::simple(name));
        }
    }
    if flags.contains(Flags::ADMIN) {
        out.push(Reply::simple("@dangerous"));
    }
    out.push(Reply::simple(if flags.contains(Flags::FAST) {
        "@fast"
    } else {
        "@slow"
    }));
    out
}

/// One command in `COMMAND`'s reply shape (Redis 7): name, arity, flags,
/// first key, last key, step, ACL categories, tips, key specs, subcommands.
fn command_entry(spec: &CommandSpec) -> Reply {
    let subcommands = table::subcommands(spec.name)
        .unwrap_or(&[])
        .iter()
        .map(|s| {
            Reply::Array(vec![
                Reply::bulk_static(s.full_name),
                Reply::Integer(i64::from(s.arity)),
                Reply::Set(flag_names(s.flags)),
                Reply::Integer(0),
                Reply::Integer(0),
                Reply::Integer(0),
                Reply::Set(acl_categories(s.flags)),
                Reply::Array(Vec::new()),
                Reply::Array(Vec::new()),
                Reply::Array(Vec::new()),
            ])
        })
        .collect();
    Reply::Array(vec![
        Reply::bulk_static(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        Reply::Set(flag_names(spec.flags)),
        Reply::Integer(i64::from(spec.first_key)),
        Reply::Integer(i64::from(spec.last_key)),
        Reply::Integer(i64::from(spec.step)),
        Reply::Set(acl_categories(spec.flags)),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(subcommands),
    ])
}

fn sorted_commands() -> Vec<&'static CommandSpec> {
    let mut all: Vec<_> = table::all().collect();
    all.sort_by_key(|c| c.name);
    all
}

/// `COMMAND` with no subcommand: every command.
fn command_all(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    Reply::Array(sorted_commands().into_iter().map(command_entry).collect())
}

fn command_count(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    Reply::Integer(i64::try_from(table::all().count()).unwrap_or(i64::MAX))
}

fn command_list(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    let pattern = match rest.as_slice() {
        [_] => None,
        [_, filterby, kind, pattern]
            if filterby.eq_ignore_ascii_case(b"filterby")
                && kind.eq_ignore_ascii_case(b"pattern") =>
        {
            Some(pattern.clone())
        }
        _ => return syntax_error(),
    };
    Reply::Array(
        sorted_commands()
            .into_iter()
            .filter(|c| {
                pattern
                    .as_ref()
                    .is_none_or(|p| glob_match(p, c.name.as_bytes(), true))
            })
            .map(|c| Reply::bulk_static(c.name))
            .collect(),
    )
}

fn command_info(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let names = args.rest();
    if names.len() <= 1 {
        return command_all_entries();
    }
    Reply::Array(
        names[1..]
            .iter()
            .map(|n| table::lookup(n).map_or(Reply::Null, command_entry))
            .collect(),
    )
}

fn command_all_entries() -> Reply {
    Reply::Array(sorted_commands().into_iter().map(command_entry).collect())
}

/// What `COMMAND DOCS` says of one command: enough for redis-cli's help and
/// hints (summary, since, group, complexity), plus the arity.
fn command_doc(spec: &CommandSpec) -> Reply {
    let (summary, complexity) = summary_of(spec.name);
    let mut doc = vec![
        (Reply::bulk_static("summary"), Reply::bulk_static(summary)),
        (Reply::bulk_static("since"), Reply::bulk_static("1.0.0")),
        (
            Reply::bulk_static("group"),
            Reply::bulk_static(group_of(spec)),
        ),
        (
            Reply::bulk_static("complexity"),
            Reply::bulk_static(complexity),
        ),
        (
            Reply::bulk_static("arity"),
            Reply::Integer(i64::from(spec.arity)),
        ),
    ];
    if let Some(subs) = table::subcommands(spec.name) {
        let subdocs = subs
            .iter()
            .map(|s| {
                (
                    Reply::bulk_static(s.full_name),
                    Reply::Map(vec![
                        (
                            Reply::bulk_static("summary"),
                            Reply::bulk_static(summary_of(s.full_name).0),
                        ),
                        (Reply::bulk_static("since"), Reply::bulk_static("1.0.0")),
                        (
                            Reply::bulk_static("group"),
                            Reply::bulk_static(group_of(spec)),
                        ),
                        (
                            Reply::bulk_static("arity"),
                            Reply::Integer(i64::from(s.arity)),
                        ),
                    ]),
                )
            })
            .collect();
        doc.push((Reply::bulk_static("subcommands"), Reply::Map(subdocs)));
    }
    Reply::Map(doc)
}

fn group_of(spec: &CommandSpec) -> &'static str {
    let name = spec.name;
    if super::string::COMMANDS.iter().any(|c| c.name == name) {
        "string"
    } else if super::keys::COMMANDS.iter().any(|c| c.name == name) {
        "generic"
    } else if spec.flags.contains(Flags::CONNECTION) && name != "command" {
        "connection"
    } else {
        "server"
    }
}

/// Summary and complexity of the commands clients commonly ask about.
fn summary_of(name: &str) -> (&'static str, &'static str) {
    match name {
        "get" => ("Returns the string value of a key.", "O(1)"),
        "set" => ("Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", "O(1)"),
        "del" => ("Deletes one or more keys.", "O(N) where N is the number of keys that will be removed."),
        "exists" => ("Determines whether one or more keys exist.", "O(N) where N is the number of keys to check."),
        "incr" => ("Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "O(1)"),
        "decr" => ("Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "O(1)"),
        "incrby" => ("Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "O(1)"),
        "decrby" => ("Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", "O(1)"),
        "mget" => ("Atomically returns the string values of one or more keys.", "O(N) where N is the number of keys to retrieve."),
        "mset" => ("Atomically creates or modifies the string values of one or more keys.", "O(N) where N is the number of keys to set."),
        "append" => ("Appends a string to the value of a key. Creates the key if it doesn't exist.", "O(1)"),
        "strlen" => ("Returns the length of a string value.", "O(1)"),
        "expire" => ("Sets the expiration time of a key in seconds.", "O(1)"),
        "pexpire" => ("Sets the expiration time of a key in milliseconds.", "O(1)"),
        "ttl" => ("Returns the expiration time in seconds of a key.", "O(1)"),
        "pttl" => ("Returns the expiration time in milliseconds of a key.", "O(1)"),
        "persist" => ("Removes the expiration time of a key.", "O(1)"),
        "type" => ("Determines the type of value stored at a key.", "O(1)"),
        "keys" => ("Returns all key names that match a pattern.", "O(N) with N being the number of keys in the database"),
        "scan" => ("Iterates over the key names in the database.", "O(1) for every call. O(N) for a complete iteration."),
        "dbsize" => ("Returns the number of keys in the database.", "O(1)"),
        "flushall" => ("Removes all keys from all databases.", "O(N) where N is the total number of keys in all databases"),
        "flushdb" => ("Remove all keys from the current database.", "O(N) where N is the number of keys in the selected database"),
        "ping" => ("Returns the server's liveliness response.", "O(1)"),
        "echo" => ("Returns the given string.", "O(1)"),
        "quit" => ("Closes the connection.", "O(1)"),
        "hello" => ("Handshakes with the Redis server.", "O(1)"),
        "auth" => ("Authenticates the connection.", "O(N) where N is the number of passwords defined for the user"),
        "select" => ("Changes the selected database.", "O(1)"),
        "readonly" => ("Enables read-only queries for a connection to a replica: reads skip the quorum round.", "O(1)"),
        "readwrite" => ("Enables linearizable read queries for a connection.", "O(1)"),
        "time" => ("Returns the server time.", "O(1)"),
        "info" => ("Returns information and statistics about the server.", "O(1)"),
        "client" => ("A container for client connection commands.", "Depends on subcommand."),
        "command" => ("Returns detailed information about all commands.", "O(N) where N is the total number of commands"),
        "config" => ("A container for server configuration commands.", "Depends on subcommand."),
        "client|setname" => ("Sets the connection name.", "O(1)"),
        "client|getname" => ("Returns the name of the connection.", "O(1)"),
        "client|setinfo" => ("Sets information specific to the client or connection.", "O(1)"),
        "client|id" => ("Returns the unique client ID of the connection.", "O(1)"),
        "client|info" => ("Returns information about the connection.", "O(1)"),
        "client|list" => ("Lists open connections.", "O(N) where N is the number of client connections"),
        "client|help" => ("Returns helpful text about the different subcommands.", "O(1)"),
        "command|count" => ("Returns a count of commands.", "O(1)"),
        "command|list" => ("Returns a list of command names.", "O(N) where N is the total number of Redis commands"),
        "command|info" => ("Returns information about one, multiple or all commands.", "O(N) where N is the number of commands to look up"),
        "command|docs" => ("Returns documentary information about one, multiple or all commands.", "O(N) where N is the number of commands to look up"),
        "command|getkeys" => ("Extracts the key names from an arbitrary command.", "O(N) where N is the number of arguments to the command"),
        "command|help" => ("Returns helpful text about the different subcommands.", "O(1)"),
        "config|get" => ("Returns the effective values of configuration parameters.", "O(N) when N is the number of configuration parameters provided"),
        "config|set" => ("Sets configuration parameters in-flight.", "O(N) when N is the number of configuration parameters provided"),
        "config|resetstat" => ("Resets the server's statistics.", "O(1)"),
        "config|rewrite" => ("Persists the effective configuration to file.", "O(1)"),
        "config|help" => ("Returns helpful text about the different subcommands.", "O(1)"),
        _ => ("", "O(1)"),
    }
}

fn command_docs(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let names = args.rest();
    let specs: Vec<&CommandSpec> = if names.len() <= 1 {
        sorted_commands()
    } else {
        names[1..].iter().filter_map(|n| table::lookup(n)).collect()
    };
    Reply::Map(
        specs
            .into_iter()
            .map(|s| (Reply::bulk_static(s.name), command_doc(s)))
            .collect(),
    )
}

fn command_getkeys(_: &Node, _: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    let argv = &rest[1..];
    let Some(spec) = argv.first().and_then(|n| table::lookup(n)) else {
        return Reply::error("ERR Invalid command specified");
    };
    if !spec.arity_ok(argv.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    if spec.first_key <= 0 {
        return Reply::error("ERR The command has no key arguments");
    }
    let argc = i64::try_from(argv.len()).unwrap_or(i64::MAX);
    let first = i64::from(spec.first_key);
    let last = if spec.last_key < 0 {
        argc + i64::from(spec.last_key)
    } else {
        i64::from(spec.last_key).min(argc - 1)
    };
    let step = i64::from(spec.step.max(1));
    let mut keys = Vec::new();
    let mut i = first;
    while i <= last {
        if let Some(key) = usize::try_from(i).ok().and_then(|i| argv.get(i)) {
            keys.push(Reply::Bulk(key.clone()));
        }
        i += step;
    }
    Reply::Array(keys)
}

fn command_help(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    help(&[
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)",
        "    Return details about all commands.",
        "COUNT",
        "    Return the total number of commands in this server.",
        "LIST [FILTERBY PATTERN <pattern>]",
        "    Return a list of all commands in this server.",
        "INFO [<command-name> ...]",
        "    Return details about multiple commands.",
        "    If no command names are given, documentation details for all",
        "    commands are returned.",
        "DOCS [<command-name> ...]",
        "    Return documentation details about multiple commands.",
        "    If no command names are given, documentation details for all",
        "    commands are returned.",
        "GETKEYS <full-command>",
        "    Return the keys from a full command.",
        "HELP",
        "    Print this help.",
    ])
}

// ---------------------------------------------------------------------------
// CONFIG

/// How a settable parameter's value is written and checked.
#[derive(Clone, Copy)]
enum Kind {
    Integer { min: u64, max: u64 },
    Memory { min: u64, max: u64 },
}

/// Parameters `CONFIG SET` may change at runtime.
fn settable(name: &str) -> Option<Kind> {
    match name {
        "maxclients" => Some(Kind::Integer {
            min: 1,
            max: u64::from(u32::MAX),
        }),
        "timeout" => Some(Kind::Integer {
            min: 0,
            max: i32::MAX as u64,
        }),
        "proto-max-bulk-len" | "client-query-buffer-limit" => Some(Kind::Memory {
            min: 1024 * 1024,
            max: i64::MAX as u64,
        }),
        _ => None,
    }
}

/// Every parameter `CONFIG GET` knows, with its value now.
fn config_params(node: &Node, session: &Session) -> Vec<(&'static str, String)> {
    let _ = node;
    let s = &session.server.settings;
    vec![
        (
            "maxclients",
            s.maxclients.load(Ordering::Relaxed).to_string(),
        ),
        (
            "timeout",
            s.timeout_secs.load(Ordering::Relaxed).to_string(),
        ),
        (
            "proto-max-bulk-len",
            s.proto_max_bulk_len.load(Ordering::Relaxed).to_string(),
        ),
        (
            "client-query-buffer-limit",
            s.client_query_buffer_limit
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        // Durability comes from the Raft log, fsynced before every commit:
        // there are no snapshots to schedule and every write is logged.
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("databases", "1".into()),
        ("dir", s.data_dir().to_string()),
        ("port", session.server.tcp_port().to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("cluster-enabled", "no".into()),
        ("replica-read-only", "yes".into()),
        ("slave-read-only", "yes".into()),
        ("tcp-keepalive", "0".into()),
        ("io-threads", "1".into()),
        ("hz", "10".into()),
    ]
}

fn config_get(node: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let patterns = args.rest();
    let params = config_params(node, session);
    let mut matched: Vec<(Reply, Reply)> = Vec::new();
    for (name, value) in params {
        if patterns[1..]
            .iter()
            .any(|p| glob_match(p, name.as_bytes(), true))
        {
            matched.push((Reply::bulk_static(name), Reply::bulk(value)));
        }
    }
    Reply::Map(matched)
}

fn config_set(node: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let rest = args.rest();
    let pairs = &rest[1..];
    if pairs.len() % 2 != 0 {
        return crate::command::exec::wrong_arity("config|set");
    }
    let known = config_params(node, session);
    // Checked all first, applied only if every one is valid, as Redis does.
    let mut updates = Vec::new();
    for pair in pairs.chunks_exact(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        let Some(kind) = settable(&name) else {
            if known.iter().any(|(k, _)| *k == name) {
                return Reply::error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
                ));
            }
            return Reply::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
        };
        let failed = |why: String| {
            Reply::error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        let (value, min, max) = match kind {
            Kind::Integer { min, max } => match parse_i64(&pair[1]) {
                Some(v) => (v, min, max),
                None => return failed("argument couldn't be parsed into an integer".into()),
            },
            Kind::Memory { min, max } => match parse_memory(&pair[1]) {
                Some(v) => (v, min, max),
                None => return failed("argument must be a memory value".into()),
            },
        };
        let Some(value) = u64::try_from(value)
            .ok()
            .filter(|v| (min..=max).contains(v))
        else {
            return failed(format!(
                "argument must be between {min} and {max} inclusive"
            ));
        };
        updates.push((name, value));
    }
    let s = &session.server.settings;
    for (name, value) in updates {
        let target = match name.as_str() {
            "maxclients" => &s.maxclients,
            "timeout" => &s.timeout_secs,
            "proto-max-bulk-len" => &s.proto_max_bulk_len,
            _ => &s.client_query_buffer_limit,
        };
        target.store(value, Ordering::Relaxed);
    }
    Reply::ok()
}

/// Redis's `memtoull`: a number with an optional unit (`b`, `k`, `kb`, `m`,
/// `mb`, `g`, `gb`; `k` = 1000, `kb` = 1024).
fn parse_memory(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?.to_ascii_lowercase();
    let units: [(&str, i64); 7] = [
        ("gb", 1024 * 1024 * 1024),
        ("mb", 1024 * 1024),
        ("kb", 1024),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1000),
        ("b", 1),
    ];
    let (digits, mul) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|d| (d, *m)))
        .unwrap_or((s.as_str(), 1));
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(mul)
}

/// Zeroes what Redis's `CONFIG RESETSTAT` zeroes: the front end's counters,
/// command and error stats, rates, and the store's hits, misses and expiry
/// count (not `used_memory_peak`, which Redis keeps too).
fn config_resetstat(node: &Node, session: &mut Session, _: &mut Args) -> Reply {
    session.server.stats.reset();
    node.store.reset_usage_stats();
    Reply::ok()
}

fn config_rewrite(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    Reply::error("ERR The server is running without a config file")
}

fn config_help(_: &Node, _: &mut Session, _: &mut Args) -> Reply {
    help(&[
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>",
        "    Set the configuration <directive> to <value>.",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command.",
        "REWRITE",
        "    Rewrite the configuration file.",
        "HELP",
        "    Print this help.",
    ])
}

/// Redis's `stringmatchlen`: `*`, `?`, `[...]` with ranges and `^`, `\`
/// escapes.
#[must_use]
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut i) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, s[i], nocase),
            Some(b'\\') if p + 1 < pattern.len() => eq(pattern[p + 1], s[i]).then_some(p + 2),
            Some(&c) => eq(c, s[i]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    p = sp;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == '['`; returns
/// the index after the class on a match.
fn match_class(pattern: &[u8], p: usize, c: u8, nocase: bool) -> Option<usize> {
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = fold(c);
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= fold(pattern[j + 1]) == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (a, b) = (fold(pattern[j]), fold(pattern[j + 2]));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            matched |= (lo..=hi).contains(&c);
            j += 3;
        } else {
            matched |= fold(pattern[j]) == c;
            j += 1;
        }
    }
    // An unterminated class ends at the pattern's end, as in Redis.
    let next = if j < pattern.len() { j + 1 } else { j };
    (matched != negate).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_options_parse_as_redis_does() {
        use crate::command::args::tests::args;
        let parse = |parts: &[&str]| parse_shutdown(&mut args(parts));
        let opts = |now, abort| Ok(ShutdownOptions { now, abort });
        assert_eq!(parse(&["shutdown"]), opts(false, false));
        assert_eq!(parse(&["shutdown", "NoSave"]), opts(false, false));
        assert_eq!(parse(&["shutdown", "save", "force"]), opts(false, false));
        assert_eq!(
            parse(&["shutdown", "now", "NOW", "nosave"]),
            opts(true, false)
        );
        assert_eq!(parse(&["shutdown", "abort"]), opts(false, true));
        for bad in [
            &["shutdown", "foo"][..],
            &["shutdown", "save", "nosave"],
            &["shutdown", "abort", "now"],
            &["shutdown", "force", "abort"],
        ] {
            assert_eq!(parse(bad), Err(syntax_error()), "{bad:?}");
        }
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match(b"*", b"maxclients", true));
        assert!(glob_match(b"max*", b"maxclients", true));
        assert!(glob_match(b"MAX*", b"maxclients", true));
        assert!(!glob_match(b"MAX*", b"maxclients", false));
        assert!(glob_match(b"*max-*-len", b"proto-max-bulk-len", true));
        assert!(glob_match(b"s?ve", b"save", true));
        assert!(glob_match(b"[sx]ave", b"save", true));
        assert!(glob_match(b"[^x]ave", b"save", true));
        assert!(!glob_match(b"[^s]ave", b"save", true));
        assert!(glob_match(b"[a-z]ave", b"save", true));
        assert!(glob_match(b"sa\\ve", b"save", true));
        assert!(!glob_match(b"save", b"saves", true));
        assert!(!glob_match(b"", b"a", true));
        assert!(glob_match(b"", b"", true));
        assert!(glob_match(b"a*b*c", b"aXbYbZc", true));
    }

    #[test]
    fn memory_values() {
        assert_eq!(parse_memory(b"512mb"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory(b"1GB"), Some(1024 * 1024 * 1024));
        assert_eq!(parse_memory(b"1k"), Some(1000));
        assert_eq!(parse_memory(b"1048576"), Some(1_048_576));
        assert_eq!(parse_memory(b"x"), None);
        assert_eq!(parse_memory(b"-1"), None);
        assert_eq!(parse_memory(b"mb"), None);
    }

    #[test]
    fn client_attributes_are_printable_without_spaces() {
        assert!(valid_client_attr(b"redis-py"));
        assert!(valid_client_attr(b""));
        assert!(!valid_client_attr(b"a b"));
        assert!(!valid_client_attr(b"a\nb"));
        assert!(!valid_client_attr(b"\xff"));
    }

    #[test]
    fn command_entries_have_redis_7_shape() {
        let client = table::lookup(b"client").unwrap();
        let Reply::Array(fields) = command_entry(client) else {
            panic!("not an array");
        };
        assert_eq!(fields.len(), 10);
        assert_eq!(fields[0], Reply::bulk_static("client"));
        assert_eq!(fields[1], Reply::Integer(-2));
        let Reply::Array(subs) = &fields[9] else {
            panic!("no subcommands");
        };
        assert!(subs.iter().any(|s| matches!(s,
            Reply::Array(f) if f[0] == Reply::bulk_static("client|setname"))));
    }

    #[test]
    fn every_container_is_in_the_table() {
        for (name, subs) in CONTAINERS {
            assert!(table::lookup(name.as_bytes()).is_some(), "{name}");
            for s in *subs {
                assert_eq!(s.full_name, format!("{name}|{}", s.name));
            }
        }
    }
}
