//! The user's defaults: `$XDG_CONFIG_HOME/keepsync/config.toml` (else
//! `~/.config/keepsync/config.toml`; `KEEPSYNC_CONFIG=FILE` names another, `KEEPSYNC_CONFIG=`
//! empty reads none). Command-line options always win over it.
//!
//! ```toml
//! key_file = "~/.keepsync.key"      # pack, unpack, verify without --key-file/--passphrase-env
//! psk_file = "~/sync.psk"           # ks:// without --psk-file
//!
//! [remotes.backup]                  # ks://backup/photos means ks://backup.lan:7373/photos
//! url = "ks://backup.lan:7373"
//! psk_file = "~/backup.psk"         # this server's key (else the psk_file above)
//! ```
//!
//! Paths may start with `~/`; relative paths are relative to the file's directory. A file
//! that does not exist is no configuration; one that cannot be read or parsed is an error
//! naming the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The contents of `config.toml`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The key file pack, unpack and verify use when given no key option.
    pub key_file: Option<PathBuf>,
    /// The PSK file `ks://` paths use when given no `--psk-file`.
    pub psk_file: Option<PathBuf>,
    /// Server aliases: `ks://NAME/PATH`.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteAlias>,
    /// Where it was read from (`None`: no file).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One server alias.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAlias {
    /// `ks://HOST[:PORT]`, optionally with a base path that the alias's paths go under.
    pub url: String,
    /// The key this server needs (else the top-level `psk_file`).
    pub psk_file: Option<PathBuf>,
}

impl Config {
    /// Reads the user's configuration (see the module documentation for where it lives).
    pub fn load() -> Result<Self> {
        let path = match std::env::var_os("KEEPSYNC_CONFIG") {
            Some(p) if p.is_empty() => return Ok(Self::default()),
            Some(p) => PathBuf::from(p),
            None => {
                match crate::io::xdg_path("XDG_CONFIG_HOME", ".config", "config.toml", "KEEPSYNC_CONFIG=FILE")
                {
                    Ok(p) => p,
                    // Neither XDG_CONFIG_HOME nor HOME: there is no user configuration.
                    Err(_) => return Ok(Self::default()),
                }
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Parses `text`, read from `path` (relative paths in it are taken from its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
                .unwrap_or_default();
            Error::Usage(format!("{}{at}: {}", path.display(), e.message()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                *p = resolve(p, base);
            }
        };
        fix(&mut config.key_file);
        fix(&mut config.psk_file);
        for (name, alias) in &mut config.remotes {
            if name.is_empty() || name.contains([':', '/', '[', ']']) {
                return Err(Error::Usage(format!(
                    "{}: remote name `{name}` must be a plain name (no `:`, `/` or brackets)",
                    path.display()
                )));
            }
            let probe = format!("{}/x", alias.url.trim_end_matches('/'));
            if !matches!(crate::net::Remote::parse(&probe), Some(Ok(_))) {
                return Err(Error::Usage(format!(
                    "{}: remotes.{name}.url `{}` is not a ks://HOST[:PORT] URL",
                    path.display(),
                    alias.url
                )));
            }
            fix(&mut alias.psk_file);
        }
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// `ks://NAME/PATH` with NAME an alias: the URL it stands for and the alias's PSK file.
    /// Anything else is returned as it is.
    pub fn expand<'a>(&'a self, arg: &str) -> (String, Option<&'a Path>) {
        let Some(rest) = arg.strip_prefix("ks://") else { return (arg.to_owned(), None) };
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(alias) = self.remotes.get(name) else { return (arg.to_owned(), None) };
        let base = alias.url.trim_end_matches('/');
        let url = if path.is_empty() { base.to_owned() } else { format!("{base}/{path}") };
        (url, alias.psk_file.as_deref().or(self.psk_file.as_deref()))
    }
}

/// `~/x` under `$HOME`; a relative path under `base`.
fn resolve(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if path.is_relative() { base.join(path) } else { path.to_path_buf() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
key_file = "keys/pack.key"
psk_file = "/etc/keepsync/sync.psk"

[remotes.backup]
url = "ks://backup.lan:7000"
psk_file = "backup.psk"

[remotes.photos]
url = "ks://nas/photos/"
"#;

    #[test]
    fn aliases_expand_and_paths_resolve_against_the_file() {
        let c = Config::parse(FILE, Path::new("/home/u/.config/keepsync/config.toml")).unwrap();
        assert_eq!(c.key_file.as_deref(), Some(Path::new("/home/u/.config/keepsync/keys/pack.key")));
        let (url, psk) = c.expand("ks://backup/photos/2026");
        assert_eq!(url, "ks://backup.lan:7000/photos/2026");
        assert_eq!(psk, Some(Path::new("/home/u/.config/keepsync/backup.psk")));
        let (url, psk) = c.expand("ks://photos/2026");
        assert_eq!(url, "ks://nas/photos/2026", "an alias's base path holds its paths");
        assert_eq!(psk, Some(Path::new("/etc/keepsync/sync.psk")), "the default PSK file");
        assert_eq!(c.expand("ks://backup").0, "ks://backup.lan:7000", "no path stays no path");
        assert_eq!(c.expand("ks://other:7000/x"), ("ks://other:7000/x".to_owned(), None));
        assert_eq!(c.expand("local/dir"), ("local/dir".to_owned(), None));
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let at = Path::new("/c/config.toml");
        let err = |text: &str| Config::parse(text, at).unwrap_err().to_string();
        let e = err("key_file = \"k\"\nkeyfile = \"x\"\n");
        assert!(e.contains("/c/config.toml (line 2)") && e.contains("keyfile"), "{e}");
        let e = err("[remotes.b]\nurl = \"http://x\"\n");
        assert!(e.contains("remotes.b.url") && e.contains("ks://HOST[:PORT]"), "{e}");
        let e = err("[remotes.\"a:b\"]\nurl = \"ks://x\"\n");
        assert!(e.contains("plain name"), "{e}");
        let e = err("psk_file = 3\n");
        assert!(e.contains("(line 1)"), "{e}");
    }
}
