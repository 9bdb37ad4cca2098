//! Where a command's flags come from besides the command line: the environment and a TOML file,
//! so that a deployment can keep secrets in its environment and the rest in a mounted file.
//!
//! Every long flag `--some-flag` of a subcommand can be set as `SESSIONIZE_SOME_FLAG` or as
//! `some-flag = …` in the file named by `--config` (or `SESSIONIZE_CONFIG`). A flag that takes
//! one value is taken from the command line, else the environment, else the file; a repeatable
//! flag (`--catalog-option`, `--input`, …) adds up its values from the file, the environment (one
//! per line) and the command line. A renamed flag keeps its old name as an alias, and the alias
//! works in the environment and the file too (`SESSIONIZE_TOPIC` for `--kafka-topic`), so that
//! deployments written for the old name keep working.
//!
//! ```
//! use clap::{Arg, ArgAction, Command};
//! use sessionize::config::flag_sources::with_flag_sources;
//! let command = Command::new("sessionize").subcommand(
//!     Command::new("run")
//!         .arg(Arg::new("threads").long("threads").default_value("1"))
//!         .arg(Arg::new("catalog-option").long("catalog-option").action(ArgAction::Append)),
//! );
//! let file = "threads = 4\ncatalog-option = [\"s3.region=eu-west-1\"]\n";
//! let env = [("SESSIONIZE_CATALOG_OPTION".to_string(), "token=T".to_string())];
//! let args = ["sessionize", "run", "--catalog-option", "warehouse=w"].map(String::from);
//! let (command, args) = with_flag_sources(command, args.into(), Some(("f.toml", file)), &env).unwrap();
//! let matches = command.get_matches_from(args);
//! let run = matches.subcommand_matches("run").unwrap();
//! assert_eq!(run.get_one::<String>("threads").unwrap(), "4");
//! let options: Vec<&String> = run.get_many("catalog-option").unwrap().collect();
//! assert_eq!(options, ["s3.region=eu-west-1", "token=T", "warehouse=w"]);
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, Command};

/// The prefix of the flags' environment variables.
pub const ENV_PREFIX: &str = "SESSIONIZE_";

/// The flag naming the file, and its variable.
pub const CONFIG_FLAG: &str = "config";

/// `SESSIONIZE_SOME_FLAG` for `--some-flag`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

/// The file `--config FILE` (or `--config=FILE`, or `SESSIONIZE_CONFIG`) names, if any.
pub fn config_file(args: &[String], env: &[(String, String)]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if *arg == flag {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix(&format!("{flag}=")) {
            return Some(path.into());
        }
    }
    let name = env_name(CONFIG_FLAG);
    env.iter()
        .find(|(key, _)| *key == name)
        .map(|(_, v)| v.into())
}

/// `command` and `args` with the flags of the invoked subcommand also taken from `env` and from
/// `file` (its name and its text), as the module describes.
pub fn with_flag_sources(
    mut command: Command,
    mut args: Vec<String>,
    file: Option<(&str, &str)>,
    env: &[(String, String)],
) -> Result<(Command, Vec<String>)> {
    let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let settings = match file {
        Some((name, text)) => parse_file(name, text)?,
        None => BTreeMap::new(),
    };
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    // The subcommand is the first argument that names one (global flags' values never do).
    let Some(invoked) = args.iter().skip(1).find(|a| names.contains(a)).cloned() else {
        return Ok((command, args));
    };
    let known = |key: &str| {
        command
            .get_subcommands()
            .flat_map(Command::get_arguments)
            .chain(command.get_arguments())
            .any(|arg| long_names(arg).contains(&key))
    };
    if let Some(unknown) = settings.keys().find(|key| !known(key)) {
        bail!(
            "{}: unknown setting {unknown:?}; settings are the long flags of `sessionize \
             {invoked} --help`, without the dashes",
            file.map(|(name, _)| name).unwrap_or_default()
        );
    }
    let mut added = Vec::new();
    command = command.mut_args(|arg| layer(arg, &settings, &env, &mut added));
    command = command.mut_subcommand(&invoked, |sub| {
        sub.mut_args(|arg| layer(arg, &settings, &env, &mut added))
    });
    // Repeatable values go before the command line's, which come last, as written.
    let at = args
        .iter()
        .position(|a| *a == invoked)
        .map_or(args.len(), |i| i + 1);
    args.splice(at..at, added);
    Ok((command, args))
}

/// `arg` with its value also from `env` and `settings`; the values of a repeatable flag are
/// pushed onto `added` as arguments instead.
fn layer(
    arg: Arg,
    settings: &BTreeMap<String, Vec<String>>,
    env: &BTreeMap<&str, &str>,
    added: &mut Vec<String>,
) -> Arg {
    let Some(long) = arg.get_long().map(str::to_string) else {
        return arg;
    };
    if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) || long == CONFIG_FLAG {
        return arg;
    }
    let names: Vec<String> = long_names(&arg).into_iter().map(String::from).collect();
    let from_file = names.iter().filter_map(|name| settings.get(name));
    let from_env = names
        .iter()
        .filter_map(|name| env.get(env_name(name).as_str()));
    if matches!(arg.get_action(), ArgAction::Append) {
        let from_env = from_env.flat_map(|v| {
            v.lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_string)
        });
        for value in from_file.flatten().cloned().chain(from_env) {
            added.push(format!("--{long}={value}"));
        }
        return arg;
    }
    // The environment's value, else the file's, is the default that the command line
    // overrides; under either, the flag's own name wins over its aliases. Values may be
    // secrets: `--help` does not show them.
    let value = from_env
        .map(|v| v.to_string())
        .next()
        .or_else(|| from_file.filter_map(|values| values.last()).next().cloned());
    match value {
        Some(value) => arg.default_value(value).hide_default_value(true),
        None => arg,
    }
}

/// The names a flag can be given under: its long name, then its aliases, hidden ones too.
fn long_names(arg: &Arg) -> Vec<&str> {
    arg.get_long()
        .into_iter()
        .chain(arg.get_all_aliases().unwrap_or_default())
        .collect()
}

/// The file's settings, each as the values of its flag.
fn parse_file(name: &str, text: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let table: toml::Table = toml::from_str(text).with_context(|| format!("{name} is not TOML"))?;
    let mut settings = BTreeMap::new();
    for (key, value) in table {
        let values = match value {
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| scalar(name, &key, item))
                .collect::<Result<Vec<_>>>()?,
            item => vec![scalar(name, &key, item)?],
        };
        settings.insert(key, values);
    }
    Ok(settings)
}

fn scalar(name: &str, key: &str, value: toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(text) => text,
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "{name}: {key} is a {}; give a string, number, boolean or a list of them",
            other.type_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command::new("s")
            .arg(Arg::new("config").long("config").global(true))
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("warehouse").long("warehouse").default_value("w"))
                    .arg(
                        Arg::new("test-mode")
                            .long("test-mode")
                            .action(ArgAction::SetTrue),
                    ),
            )
            .subcommand(
                Command::new("produce")
                    .arg(Arg::new("rate").long("rate"))
                    .arg(
                        Arg::new("kafka-topic")
                            .long("kafka-topic")
                            .alias("topic")
                            .default_value("events"),
                    ),
            )
    }

    fn parse(args: &[&str], file: &str, env: &[(&str, &str)]) -> Result<clap::ArgMatches> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (command, args) = with_flag_sources(command(), args, Some(("f", file)), &env)?;
        Ok(command.try_get_matches_from(args)?)
    }

    fn warehouse(matches: &clap::ArgMatches) -> String {
        let run = matches.subcommand_matches("run").unwrap();
        run.get_one::<String>("warehouse").unwrap().clone()
    }

    #[test]
    fn the_command_line_wins_over_the_environment_over_the_file() {
        let file = "warehouse = \"from-file\"\ntest-mode = true\nrate = 5\n";
        let env = [("SESSIONIZE_WAREHOUSE", "from-env")];
        let both = parse(&["s", "run", "--warehouse", "cli"], file, &env).unwrap();
        assert_eq!(warehouse(&both), "cli");
        assert_eq!(
            warehouse(&parse(&["s", "run"], file, &env).unwrap()),
            "from-env"
        );
        let only_file = parse(&["s", "run"], file, &[]).unwrap();
        assert_eq!(warehouse(&only_file), "from-file");
        assert!(
            only_file
                .subcommand_matches("run")
                .unwrap()
                .get_flag("test-mode")
        );
        assert_eq!(warehouse(&parse(&["s", "run"], "", &[]).unwrap()), "w");
    }

    #[test]
    fn a_renamed_flag_is_still_set_by_its_old_name_but_its_new_name_wins() {
        let topic = |args: &[&str], file: &str, env: &[(&str, &str)]| {
            let matches = parse(args, file, env).unwrap();
            let produce = matches.subcommand_matches("produce").unwrap();
            produce.get_one::<String>("kafka-topic").unwrap().clone()
        };
        assert_eq!(topic(&["s", "produce"], "", &[]), "events");
        assert_eq!(topic(&["s", "produce", "--topic", "cli"], "", &[]), "cli");
        assert_eq!(topic(&["s", "produce"], "topic = \"file\"", &[]), "file");
        let old_env = [("SESSIONIZE_TOPIC", "old-env")];
        assert_eq!(topic(&["s", "produce"], "", &old_env), "old-env");
        let both_env = [
            ("SESSIONIZE_TOPIC", "old"),
            ("SESSIONIZE_KAFKA_TOPIC", "new"),
        ];
        assert_eq!(topic(&["s", "produce"], "", &both_env), "new");
        let both_file = "topic = \"old\"\nkafka-topic = \"new\"\n";
        assert_eq!(topic(&["s", "produce"], both_file, &[]), "new");
    }

    #[test]
    fn unknown_settings_and_bad_files_are_named() {
        let error = parse(&["s", "run"], "warehous = 1", &[]).unwrap_err();
        assert!(error.to_string().contains("\"warehous\""), "{error}");
        assert!(parse(&["s", "run"], "warehouse = ", &[]).is_err());
        assert!(parse(&["s", "run"], "warehouse = {a = 1}", &[]).is_err());
    }

    #[test]
    fn the_file_is_found_on_the_command_line_or_in_the_environment() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let env = [("SESSIONIZE_CONFIG".to_string(), "e.toml".to_string())];
        let found = config_file(&args(&["s", "run", "--config", "a.toml"]), &env);
        assert_eq!(found, Some("a.toml".into()));
        let found = config_file(&args(&["s", "--config=b.toml", "run"]), &[]);
        assert_eq!(found, Some("b.toml".into()));
        assert_eq!(
            config_file(&args(&["s", "run"]), &env),
            Some("e.toml".into())
        );
    }
}
