//! Secret values of the configuration: `env:NAME`, `file:PATH` (relative to the config file) or
//! literal, resolved at load; `Debug` shows the reference, never the value.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// A secret value: written `env:NAME`, `file:PATH` or literally, resolved at load.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub(crate) struct Secret {
    reference: String,
    value: Option<String>,
}

impl From<String> for Secret {
    fn from(reference: String) -> Self {
        Self { reference, value: None }
    }
}

impl Secret {
    /// A fresh secret: 32 bytes from the operating system's CSPRNG, in hex (the demo's HS256 keys,
    /// the embedded sandbox's customer secret).
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let value: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self { reference: "<generated>".into(), value: Some(value) })
    }

    /// The resolved value (empty if never resolved, which `Config::load` rules out).
    pub(crate) fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or_default()
    }

    pub(crate) fn resolve(&mut self, base_dir: &Path, field: &str) -> Result<(), ConfigError> {
        if self.value.is_some() {
            return Ok(());
        }
        let value = if let Some(name) = self.reference.strip_prefix("env:") {
            std::env::var(name)
                .map_err(|_| ConfigError::new(field, format!("environment variable {name} is not set")))?
        } else if let Some(path) = self.reference.strip_prefix("file:") {
            let path = base_dir.join(path);
            std::fs::read_to_string(&path)
                .map_err(|error| ConfigError::new(field, format!("reading {}: {error}", path.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_string()
        } else {
            std::mem::replace(&mut self.reference, "<literal>".into())
        };
        if value.is_empty() {
            return Err(ConfigError::new(field, "the value is empty"));
        }
        self.value = Some(value);
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.reference)
    }
}
