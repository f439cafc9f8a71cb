//! `raftis status --endpoints a,b,c`: one table of every endpoint's Raft
//! state, like `etcdctl endpoint status -w table`.
//!
//! Each endpoint is asked `INFO raft persistence` over its own RESP
//! connection, all at once, each bounded by the timeout. The `# Raft`
//! section gives the id, role, term, commit and applied index and leader;
//! `db_size_bytes` in `# Persistence` gives the size on disk (`-` when the
//! node does not report it). An endpoint that cannot be reached, or answers
//! with an error, gets a row with only its endpoint and the error, and the
//! exit code is 1.
//!
//! ```text
//! +-----------------+----+----------+------+--------+---------+--------+---------+--------+
//! |    ENDPOINT     | ID |   ROLE   | TERM | COMMIT | APPLIED | LEADER | DB SIZE | ERRORS |
//! +-----------------+----+----------+------+--------+---------+--------+---------+--------+
//! | 127.0.0.1:6379  |  1 |  leader  |    2 |     14 |      14 |      1 |  113 kB |        |
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::resp_client::{RespClient, RespValue};

/// The rendered table and how many endpoints failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The table, without a final newline.
    pub table: String,
    /// Endpoints that could not be queried.
    pub failures: usize,
}

/// One endpoint's state, as read from `INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndpointState {
    id: String,
    role: String,
    term: String,
    commit: String,
    applied: String,
    leader: String,
    db_size: Option<u64>,
}

const HEADERS: [&str; 9] = [
    "ENDPOINT", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER", "DB SIZE", "ERRORS",
];

/// Queries every endpoint (concurrently) and renders the table.
pub async fn run(endpoints: &[String], timeout: Duration) -> StatusReport {
    let states =
        futures::future::join_all(endpoints.iter().map(|e| query(e.trim(), timeout))).await;
    let mut failures = 0;
    let rows: Vec<[String; 9]> = endpoints
        .iter()
        .zip(states)
        .map(|(endpoint, state)| match state {
            Ok(s) => [
                endpoint.trim().to_owned(),
                s.id,
                s.role,
                s.term,
                s.commit,
                s.applied,
                s.leader,
                s.db_size.map_or_else(|| "-".to_owned(), human_bytes),
                String::new(),
            ],
            Err(error) => {
                failures += 1;
                let mut row: [String; 9] = Default::default();
                row[0] = endpoint.trim().to_owned();
                row[8] = error;
                row
            }
        })
        .collect();
    StatusReport {
        table: render(&rows),
        failures,
    }
}

async fn query(endpoint: &str, timeout: Duration) -> Result<EndpointState, String> {
    let mut client = RespClient::connect(endpoint, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let reply = client
        .call(&[b"INFO", b"raft", b"persistence"])
        .await
        .map_err(|e| e.to_string())?;
    let text = match &reply {
        RespValue::Error(message) => return Err(format!("INFO refused: {message}")),
        other => other
            .as_str()
            .ok_or_else(|| format!("unexpected reply to INFO: {other}"))?,
    };
    parse_info(text)
}

/// Reads the fields of `INFO raft persistence`.
fn parse_info(text: &str) -> Result<EndpointState, String> {
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .collect();
    let field = |key: &str| {
        fields
            .get(key)
            .map(|v| (*v).to_owned())
            .ok_or_else(|| format!("INFO raft has no '{key}' field (not a raftis node?)"))
    };
    let leader = field("leader_id")?;
    Ok(EndpointState {
        id: field("node_id")?,
        role: field("raft_role")?,
        term: field("term")?,
        commit: field("commit_index")?,
        applied: field("last_applied")?,
        leader: if leader.is_empty() || leader == "0" {
            "-".to_owned()
        } else {
            leader
        },
        db_size: fields.get("db_size_bytes").and_then(|v| v.parse().ok()),
    })
}

/// A byte count the way etcdctl prints DB SIZE: SI units, one decimal
/// below 10 (`1.2 MB`, `25 kB`, `512 B`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    if n < 10 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A bordered table with centred cells, as etcdctl's `-w table`.
fn render(rows: &[[String; 9]]) -> String {
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = {
        let mut line = String::from("+");
        for w in &widths {
            line.push_str(&"-".repeat(w + 2));
            line.push('+');
        }
        line
    };
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from("|");
        for (cell, w) in cells.zip(&widths) {
            let pad = w - cell.chars().count();
            let left = pad / 2;
            out.push(' ');
            out.push_str(&" ".repeat(left));
            out.push_str(cell);
            out.push_str(&" ".repeat(pad - left));
            out.push_str(" |");
        }
        out
    };
    let mut out = vec![
        rule.clone(),
        line(&mut HEADERS.iter().copied()),
        rule.clone(),
    ];
    for row in rows {
        out.push(line(&mut row.iter().map(String::as_str)));
    }
    out.push(rule);
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Raft\r\nnode_id:2\r\nraft_role:follower\r\nleader_id:1\r\nterm:3\r\n\
        commit_index:40\r\nlast_applied:39\r\n\r\n# Persistence\r\nloading:0\r\ndb_size_bytes:1234567\r\n";

    #[test]
    fn info_fields_become_a_row() {
        assert_eq!(
            parse_info(INFO),
            Ok(EndpointState {
                id: "2".into(),
                role: "follower".into(),
                term: "3".into(),
                commit: "40".into(),
                applied: "39".into(),
                leader: "1".into(),
                db_size: Some(1_234_567),
            })
        );
        let no_leader = INFO.replace("leader_id:1", "leader_id:");
        assert_eq!(parse_info(&no_leader).unwrap().leader, "-");
        let no_size = INFO.replace("db_size_bytes:1234567\r\n", "");
        assert_eq!(parse_info(&no_size).unwrap().db_size, None);
        assert_eq!(
            parse_info("# Server\r\nredis_version:7.2.0\r\n").unwrap_err(),
            "INFO raft has no 'leader_id' field (not a raftis node?)"
        );
    }

    #[test]
    fn sizes_print_like_etcdctl() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(25_000), "25 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(3_000_000_000), "3.0 GB");
    }

    #[test]
    fn table_is_bordered_and_centred() {
        let rows = vec![
            [
                "127.0.0.1:6379",
                "1",
                "leader",
                "2",
                "14",
                "14",
                "1",
                "113 kB",
                "",
            ]
            .map(String::from),
            ["127.0.0.1:1", "", "", "", "", "", "", "", "refused"].map(String::from),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[1],
            "|    ENDPOINT    | ID |  ROLE  | TERM | COMMIT | APPLIED | LEADER | DB SIZE | ERRORS  |"
        );
        assert_eq!(
            lines[3],
            "| 127.0.0.1:6379 | 1  | leader |  2   |   14   |   14    |   1    | 113 kB  |         |"
        );
        assert!(lines[4].ends_with("| refused |"), "{}", lines[4]);
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
    }

    #[tokio::test]
    async fn unreachable_endpoint_gets_an_error_row() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let report = run(std::slice::from_ref(&addr), Duration::from_secs(2)).await;
        assert_eq!(report.failures, 1);
        assert!(
            report.table.contains(&format!("cannot connect to {addr}")),
            "{}",
            report.table
        );
    }
}
