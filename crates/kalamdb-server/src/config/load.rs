//! Reading the configuration: the file (or the defaults), TOML, and errors that name the key.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Config;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config.toml";

/// Why the configuration was refused.
#[derive(Debug)]
pub struct ConfigError {
    source_name: String,
    key: Option<String>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({})", self.source_name)?;
        match &self.key {
            Some(key) => write!(f, ": {key}: {}", self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The dotted key at fault (`server.port`), when one is.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// Where the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file.
    File(PathBuf),
    /// No file: the built-in defaults.
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

impl Config {
    /// Loads the configuration: `path` when given (a missing file is an error), else
    /// `./config.toml` when it exists, else the built-in defaults. The result is validated.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let path = match path {
            Some(path) => path.to_owned(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
            None => {
                let config = Config::default();
                config.validate("built-in defaults")?;
                return Ok((config, ConfigSource::Defaults));
            }
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            source_name: name.clone(),
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let config = Config::from_toml(&text, &name)?;
        Ok((config, ConfigSource::File(path)))
    }

    /// Parses and validates TOML text; `source_name` labels errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let error = |key: Option<String>, message: String| ConfigError {
            source_name: source_name.to_owned(),
            key,
            message,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| error(None, e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            error(key, e.into_inner().to_string().trim_end().to_owned())
        })?;
        config.validate(source_name)?;
        Ok(config)
    }

    /// Checks every value a type alone cannot; the error names the key.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        self.check().map_err(|invalid| ConfigError {
            source_name: source_name.to_owned(),
            key: Some(invalid.key.to_owned()),
            message: invalid.message,
        })
    }
}
