//! What every test of the benchmark binary does: run it with a few arguments, insist it
//! succeeded, and read the Markdown tables it prints.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `gotalk-bench` with `args` and the `env` pairs (logs at error level), and returns
/// its standard output; panics with both outputs when it fails.
pub(crate) fn run<I, S>(args: I, env: &[(&str, &OsStr)]) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_gotalk-bench"));
    command.args(args).env("RUST_LOG", "error");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run gotalk-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stdout}\n{stderr}", output.status);
    stdout
}

/// The body rows of every Markdown table in `stdout`, each as its trimmed cells; a header
/// row is one whose first cell starts with one of `headers`.
pub(crate) fn rows<'a>(stdout: &'a str, headers: &[&str]) -> Vec<Vec<&'a str>> {
    stdout
        .lines()
        .filter(|line| line.starts_with("| "))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cells| !headers.iter().any(|h| cells[0].starts_with(h)))
        .collect()
}
