//! External programs the tests drive: finding them, and running them with a
//! deadline.
//!
//! `redis-cli`, `redis-benchmark` and python's `redis` module are required,
//! not optional: a test that skipped itself when a tool was missing could
//! never fail, so a missing tool fails the test with the command that
//! installs it (CI's `.ci/run` installs all three).
//!
//! [`run`] sends a program's stdout and stderr to files rather than pipes
//! (a chatty program cannot fill a pipe and block), polls for its exit, and
//! kills it at the deadline, so no test waits forever on a tool.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Finds `program` on `PATH`, or panics saying how to install it.
pub fn require(program: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed and these tests need it: {install}")
        })
}

/// `redis-cli`, from Debian's redis-tools.
pub fn redis_cli() -> PathBuf {
    require(
        "redis-cli",
        "apt-get install redis-tools (Debian/Ubuntu; .ci/run does it)",
    )
}

/// `redis-benchmark`, from Debian's redis-tools.
pub fn redis_benchmark() -> PathBuf {
    require(
        "redis-benchmark",
        "apt-get install redis-tools (Debian/Ubuntu; .ci/run does it)",
    )
}

/// `python3`, checked to have redis-py importable.
pub fn python_with_redis() -> PathBuf {
    let python = require("python3", "apt-get install python3");
    let mut check = Command::new(&python);
    check.args(["-c", "import redis"]);
    let out = run(check, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "python3 cannot import redis-py, which these tests need: \
         python3 -m pip install redis (or apt-get install python3-redis; .ci/run does it)\n{}",
        out.stderr
    );
    python
}

/// A finished program's exit status and output.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with the whole output unless the program exited with 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.status.success(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with `stdin` as its input (or none), waits at most `timeout`
/// for it to exit, and returns its status and output.
///
/// # Panics
/// If it cannot be started or is still running at the deadline (it is
/// killed first, and what it printed is shown).
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut stdout = tempfile::tempfile().expect("temp file");
    let mut stderr = tempfile::tempfile().expect("temp file");
    let input = match stdin {
        Some(bytes) => {
            let mut file = tempfile::tempfile().expect("temp file");
            file.write_all(bytes).expect("write stdin file");
            file.rewind().expect("rewind stdin file");
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    cmd.stdin(input)
        .stdout(stdout.try_clone().expect("clone file"))
        .stderr(stderr.try_clone().expect("clone file"));
    let described = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |file: &mut std::fs::File| {
        let mut bytes = Vec::new();
        file.rewind().expect("rewind output file");
        file.read_to_end(&mut bytes).expect("read output file");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let (stdout, stderr) = (read(&mut stdout), read(&mut stderr));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{described} still ran after {timeout:?} and was killed\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}
