//! `gotalk serve`'s settings from the environment and from a config file, beside its flags.
//!
//! clap stays the one description of the settings: every long flag of `serve` (the
//! application's own included) also reads `GOTALK_<FLAG>` through clap's `env`, and
//! `--config FILE` names a TOML file whose keys are the same long flags. A value given on the
//! command line wins over the environment, which wins over the file, which wins over the
//! default. The file's values go through the flags' own parsers, so they are checked as the
//! flags are, and a key that names no flag is an error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The subcommand whose flags the environment and the file set.
const SERVE: &str = "serve";
/// The id of `--config`.
const CONFIG: &str = "config";

/// The environment variable that sets the flag `--long`: `GOTALK_` and the name in upper
/// case with `_` for `-` (`--tls-cert` is `GOTALK_TLS_CERT`).
pub(crate) fn env_name(long: &str) -> String {
    format!("GOTALK_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `command` with `serve`'s every long flag also read from its environment variable, and
/// `--config`.
pub(crate) fn with_sources(command: Command) -> Command {
    command.mut_subcommand(SERVE, |serve| {
        let flags: Vec<(clap::Id, String, bool)> = serve
            .get_arguments()
            .filter_map(|arg| {
                let long = arg.get_long()?;
                let repeatable = matches!(arg.get_action(), ArgAction::Append)
                    && arg.get_value_delimiter().is_none();
                Some((arg.get_id().clone(), long.to_owned(), repeatable))
            })
            .collect();
        let mut serve = serve.arg(
            clap::Arg::new(CONFIG)
                .long(CONFIG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Read settings from this TOML file: its keys are the long flags without \
                     `--` (`tls-cert = \"/etc/gotalk/cert.pem\"`, `allow-origin = [\"…\"]`). \
                     A flag given on the command line wins over its environment variable, \
                     which wins over the file",
                ),
        );
        for (id, long, repeatable) in flags {
            serve = serve.mut_arg(id, |arg| {
                let arg = arg.env(env_name(&long));
                // One variable holds every value of a repeatable flag.
                if repeatable {
                    arg.value_delimiter(',')
                } else {
                    arg
                }
            });
        }
        serve.mut_arg(CONFIG, |arg| arg.env(env_name(CONFIG)))
    })
}

/// Parses the command line, environment and config file of `command` as clap would parse
/// the command line alone, exiting on errors as clap does (status 2).
pub(crate) fn matches(command: &Command) -> ArgMatches {
    match try_matches(command, std::env::args_os().collect()) {
        Ok(matches) => matches,
        Err(Refused::Clap(e)) => e.exit(),
        Err(Refused::File(e)) => {
            eprintln!("gotalk: {e}");
            std::process::exit(2);
        }
        Err(Refused::FileValue(path, e)) => {
            eprintln!("gotalk: a value in {} was refused:", path.display());
            e.exit()
        }
    }
}

/// Why the settings were refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The command line or a variable, as clap says.
    Clap(clap::Error),
    /// The config file as a whole, or one of its keys.
    File(FileError),
    /// A value the file gave, as clap says.
    FileValue(PathBuf, clap::Error),
}

fn try_matches(command: &Command, args: Vec<OsString>) -> Result<ArgMatches, Refused> {
    use clap::error::ErrorKind;
    let strict = command.clone().try_get_matches_from(&args);
    let strict_ok = strict.is_ok();
    let first = match strict {
        Ok(matches) => matches,
        // A flag may need another that only the file gives (--tls-cert here, tls-key
        // there): read the file's name from what parses, and judge the whole after.
        Err(e) if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            match command.clone().ignore_errors(true).try_get_matches_from(&args) {
                Ok(lenient) if config_of(&lenient).is_some() => lenient,
                _ => return Err(Refused::Clap(e)),
            }
        }
        Err(e) => return Err(Refused::Clap(e)),
    };
    let (Some((_, serve)), Some(path)) = (first.subcommand(), config_of(&first)) else {
        return Ok(first);
    };
    let Some(serve_command) = command.find_subcommand(SERVE) else { return Ok(first) };
    let extra = file_args(serve_command, serve, &path).map_err(Refused::File)?;
    // Flags after the subcommand's own: `serve` takes no positional arguments, so the
    // file's flags cannot be taken for one.
    let all = args.into_iter().chain(extra.into_iter().map(OsString::from));
    command.clone().try_get_matches_from(all).map_err(|e| {
        // The command line alone was fine: the file's values are to blame.
        if strict_ok {
            Refused::FileValue(path, e)
        } else {
            Refused::Clap(e)
        }
    })
}

/// The config file `serve` was given.
fn config_of(matches: &ArgMatches) -> Option<PathBuf> {
    match matches.subcommand() {
        Some((SERVE, serve)) => serve.try_get_one::<PathBuf>(CONFIG).ok().flatten().cloned(),
        _ => None,
    }
}

/// A config file that cannot be used, with the file and the key.
#[derive(Debug)]
pub(crate) struct FileError(String);

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flags that the file at `path` adds to `serve`'s command line: one `--key=value` for
/// each key neither the command line nor the environment set.
pub(crate) fn file_args(
    serve: &Command,
    given: &ArgMatches,
    path: &Path,
) -> Result<Vec<String>, FileError> {
    let at = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| FileError(format!("cannot read the config file {at}: {e}")))?;
    let table: toml::Table =
        text.parse().map_err(|e| FileError(format!("{at}: not valid TOML: {e}")))?;
    let mut extra = Vec::new();
    for (key, value) in &table {
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && key != CONFIG)
            .ok_or_else(|| FileError(unknown_key(serve, &at, key)))?;
        let set_elsewhere = matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let values = flag_values(arg, value)
            .map_err(|why| FileError(format!("{at}: key `{key}`: {why}")))?;
        if !set_elsewhere {
            extra.extend(values.into_iter().map(|v| match v {
                Some(v) => format!("--{key}={v}"),
                None => format!("--{key}"),
            }));
        }
    }
    Ok(extra)
}

fn unknown_key(serve: &Command, at: &impl std::fmt::Display, key: &str) -> String {
    let dashed = key.replace('_', "-");
    let hint = if dashed != key && serve.get_arguments().any(|a| a.get_long() == Some(&dashed)) {
        format!(" (did you mean `{dashed}`?)")
    } else {
        String::new()
    };
    format!(
        "{at}: unknown key `{key}`{hint}; the keys are `gotalk serve`'s long flags without `--`"
    )
}

/// What a file's value means on the command line: each `Some(v)` is `--key=v`, a `None` is
/// the flag alone (a switch turned on).
fn flag_values(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<Option<String>>, String> {
    use toml::Value;
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let scalar = |value: &Value| match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
            Err("expected a string, a number or a boolean".to_owned())
        }
    };
    match value {
        Value::Boolean(on) if switch => {
            // A switch left off in the file is its default.
            let wanted = *on == matches!(arg.get_action(), ArgAction::SetTrue);
            Ok(if wanted { vec![None] } else { vec![] })
        }
        _ if switch => Err("expected true or false".into()),
        Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(|item| scalar(item).map(Some)).collect()
        }
        Value::Array(_) => Err("takes one value, not a list".into()),
        value => Ok(vec![Some(scalar(value)?)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Serve(Box<crate::serve::Args>),
    }

    fn serve_command() -> Command {
        use clap::CommandFactory;
        with_sources(Cli::command())
    }

    /// A file of its own for each call: tests run at once, and two may pass the same `name`.
    fn write(name: &str, text: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = format!("gotalk-config-{}-{n}-{name}", std::process::id());
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The flags the file adds, with `args` on the command line.
    fn added(args: &[&str], file: &str) -> Result<Vec<String>, String> {
        let command = serve_command();
        let path = write(&args.join("_").replace(['-', '/', '.'], ""), file);
        let all = ["gotalk", "serve"].iter().chain(args);
        let matches = command.clone().try_get_matches_from(all).unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        let out = file_args(command.find_subcommand(SERVE).unwrap(), serve, &path);
        let _ = std::fs::remove_file(&path);
        out.map_err(|e| e.0)
    }

    #[test]
    fn every_serve_flag_has_its_variable() {
        let command = serve_command();
        let serve = command.find_subcommand(SERVE).unwrap();
        let tls = serve.get_arguments().find(|a| a.get_long() == Some("tls-cert")).unwrap();
        assert_eq!(tls.get_env(), Some(std::ffi::OsStr::new("GOTALK_TLS_CERT")));
        for arg in serve.get_arguments().filter(|a| a.get_long().is_some()) {
            let env = arg.get_env().unwrap_or_else(|| panic!("{:?} has none", arg.get_id()));
            assert_eq!(env.to_str().unwrap(), env_name(arg.get_long().unwrap()));
        }
        command.debug_assert();
    }

    #[test]
    fn a_file_sets_what_the_command_line_left_out() {
        let file = "http = \"127.0.0.1:9\"\nallow-origin = [\"https://a.example\", \
                    \"https://b.example\"]\nread-timeout = 2.5\nrequest-limit = 7\n";
        assert_eq!(
            added(&[], file).unwrap(),
            [
                "--allow-origin=https://a.example",
                "--allow-origin=https://b.example",
                "--http=127.0.0.1:9",
                "--read-timeout=2.5",
                "--request-limit=7",
            ]
        );
        // The command line wins.
        assert_eq!(
            added(&["--http", "127.0.0.1:8", "--request-limit=1"], file).unwrap(),
            [
                "--allow-origin=https://a.example",
                "--allow-origin=https://b.example",
                "--read-timeout=2.5",
            ]
        );
    }

    #[test]
    fn a_file_with_a_key_that_names_no_flag_is_refused() {
        let e = added(&[], "http = \"127.0.0.1:9\"\nlisten = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown key `listen`"), "{e}");
        let e = added(&[], "tls_cert = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown key `tls_cert` (did you mean `tls-cert`?)"), "{e}");
        for nested in ["config = \"other.toml\"\n", "[serve]\nhttp = \"x\"\n"] {
            let e = added(&[], nested).unwrap_err();
            assert!(e.contains("unknown key"), "{e}");
        }
    }

    fn parse(args: &[&str], file: &str) -> Result<ArgMatches, Refused> {
        let path = write(&format!("parse-{}", args.len()), file);
        let mut all: Vec<OsString> = ["gotalk", "serve", "--config"].map(OsString::from).into();
        all.push(path.clone().into());
        all.extend(args.iter().map(OsString::from));
        let out = try_matches(&serve_command(), all);
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn a_flag_may_need_another_that_the_file_gives() {
        let file = "tls-key = \"key.pem\"\n";
        let matches = parse(&["--tls-cert", "cert.pem"], file).unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        assert_eq!(serve.get_one::<PathBuf>("tls_key"), Some(&PathBuf::from("key.pem")));
        // Without it, the command line's own error.
        let Err(Refused::Clap(e)) = parse(&["--tls-cert", "cert.pem"], "") else { panic!() };
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let Err(Refused::FileValue(_, e)) = parse(&[], "max-connections = -1\n") else { panic!() };
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn a_file_value_of_the_wrong_shape_is_refused() {
        let e = added(&[], "http = [\"a\", \"b\"]\n").unwrap_err();
        assert!(e.contains("key `http`: takes one value"), "{e}");
        let e = added(&[], "max-connections = { n = 1 }\n").unwrap_err();
        assert!(e.contains("key `max-connections`: expected a string"), "{e}");
        let e = added(&[], "http = \n").unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
    }
}
