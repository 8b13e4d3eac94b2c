//! Checks of `[log]`: where the access log goes (`"stdout"`, `"off"` or a
//! file in a directory that exists), its format and its queue.

use toml::Spanned;

use super::super::file::LogSection;
use super::super::*;
use super::{nearest, Source};

/// The words `access` takes besides a path.
const ACCESS_WORDS: [&str; 2] = ["stdout", "off"];

impl Source<'_> {
    pub(super) fn log(
        &self,
        section: Option<Spanned<LogSection>>,
    ) -> Result<LogConfig, Box<ConfigError>> {
        let Some(section) = section.map(Spanned::into_inner) else {
            return Ok(LogConfig::default());
        };
        let defaults = LogConfig::default();
        let access = match &section.access {
            None => defaults.access,
            Some(a) => self.access_target(a)?,
        };
        let format = match &section.format {
            None => defaults.format,
            Some(f) => match self.choice(f, "format", &Format::NAMES)? {
                "combined" => Format::Combined,
                _ => Format::Json,
            },
        };
        let queue_lines = match &section.queue_lines {
            None => defaults.queue_lines,
            Some(n) => self.in_range(n, "queue_lines", 1, MAX_QUEUE_LINES as i64)? as usize,
        };
        Ok(LogConfig {
            access,
            format,
            log_query: section.log_query.is_some_and(|q| *q.get_ref()),
            queue_lines,
        })
    }

    /// `"stdout"`, `"off"`, or a file path, which must say it is one (a
    /// `/` in it: a bare word is much likelier a misspelt `stdout`) and
    /// lie in a directory that exists.
    fn access_target(&self, v: &Spanned<String>) -> Result<Option<AccessTarget>, Box<ConfigError>> {
        let value = v.get_ref().as_str();
        match value {
            "off" => return Ok(None),
            "stdout" => return Ok(Some(AccessTarget::Stdout)),
            _ => {}
        }
        if !value.contains('/') {
            let guess = nearest(&value.to_ascii_lowercase(), ACCESS_WORDS.iter().copied())
                .map_or(String::new(), |s| {
                    format!("did you mean \"{s}\"? Otherwise ")
                });
            let fix = format!(
                "{guess}write \"stdout\", \"off\", or a file path with a `/` in it, like \
                 \"/var/log/switchyard/access.log\" or \"./access.log\""
            );
            return Err(self.bad_value(v, "access", fix));
        }
        let path = self.relative(value);
        if path.is_dir() {
            let fix =
                "it is a directory; name a file in it, like \"/var/log/switchyard/access.log\"";
            return Err(self.bad_value(v, "access", fix.to_string()));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            let fix = format!(
                "the directory {} does not exist; create it, or log elsewhere",
                dir.display()
            );
            return Err(self.bad_value(v, "access", fix));
        }
        Ok(Some(AccessTarget::File(path)))
    }
}
