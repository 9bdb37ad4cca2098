//! The values settings are given in besides durations: `key=value` options (whose secret values
//! may be kept in files or the environment) and the names of databases and tables.

use anyhow::Result;

/// The prefix of the environment variables that add Kafka options:
/// `SESSIONIZE_KAFKA_OPTION_SASL_PASSWORD=x` is the option `sasl.password=x`.
pub const KAFKA_OPTION_ENV_PREFIX: &str = "SESSIONIZE_KAFKA_OPTION_";

/// Parses `key=value`; a value `@FILE` is read from FILE (its trailing line end dropped), so
/// that secrets need not appear in the command line that `ps` shows.
///
/// ```
/// use sessionize::config::parse_key_value;
/// assert_eq!(parse_key_value("sasl.username=app"), Ok(("sasl.username".into(), "app".into())));
/// assert!(parse_key_value("no-value").is_err());
/// ```
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|v| (key.clone(), v.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("cannot read the value of {key} from {path:?}: {e}")),
        None => Ok((key, value)),
    }
}

/// The Kafka options that this process's environment adds (see [`kafka_options_from`]).
pub fn kafka_options_from_env() -> Vec<(String, String)> {
    kafka_options_from(std::env::vars())
}

/// The Kafka options that the variables `vars` add: each `SESSIONIZE_KAFKA_OPTION_<KEY>` is the
/// option named by `<KEY>` in lower case with `.` for `_`, as librdkafka spells its settings.
pub fn kafka_options_from(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(KAFKA_OPTION_ENV_PREFIX)?;
            Some((key.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect()
}

/// `name` if it can name a database or table, else an error naming the `flag` it was given by.
/// A name is a directory of the checkpoint store too, so only letters, digits, `_` and `-` (no
/// path separators, no `..`, no `.` that could make two names meet), and no leading `-`.
pub fn identifier(name: String, flag: &str) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-');
    anyhow::ensure!(
        valid,
        "--{flag} {name:?} is not a valid name: use up to 128 letters, digits, `_` or `-`"
    );
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign_and_read_files() {
        assert_eq!(
            parse_key_value(" header.X=a=b"),
            Ok(("header.X".into(), "a=b".into()))
        );
        assert_eq!(parse_key_value("key="), Ok(("key".into(), String::new())));
        assert!(parse_key_value("=value").is_err());
        assert!(parse_key_value("key").is_err());

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\r\n").unwrap();
        let option = format!("sasl.password=@{}", secret.display());
        assert_eq!(
            parse_key_value(&option),
            Ok(("sasl.password".into(), "s3cret".into()))
        );
        let missing = format!("sasl.password=@{}", dir.path().join("none").display());
        let error = parse_key_value(&missing).unwrap_err();
        assert!(error.contains("sasl.password"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn kafka_options_come_from_prefixed_variables_only() {
        let vars = [
            ("SESSIONIZE_KAFKA_OPTION_SASL_PASSWORD", "x"),
            ("SESSIONIZE_KAFKA_SERVERS", "localhost:9092"),
            ("HOME", "/root"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()));
        assert_eq!(
            kafka_options_from(vars),
            [("sasl.password".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn identifiers_cannot_leave_their_directory() {
        for name in ["sessions", "user_sessions", "a-1", &"x".repeat(128)] {
            assert_eq!(identifier(name.to_string(), "t").unwrap(), name);
        }
        for name in ["", "a.b", "..", "a/b", "-a", "a b", &"x".repeat(129)] {
            let error = identifier(name.to_string(), "iceberg-table").unwrap_err();
            assert!(error.to_string().contains("--iceberg-table"), "{error}");
        }
    }
}
