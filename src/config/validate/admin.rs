//! `[admin]`: the admin listener's address, and the token its mutating
//! endpoints ask for.

use std::net::SocketAddr;

use toml::Spanned;

use super::super::file::AdminSection;
use super::{overlaps, Source};
use crate::config::{AdminConfig, ConfigError, ErrorKind, DEFAULT_ADMIN_LISTEN};

impl Source<'_> {
    pub(super) fn admin(
        &self,
        section: AdminSection,
        data: &[SocketAddr],
    ) -> Result<AdminConfig, Box<ConfigError>> {
        let (addr, span) = match &section.listen {
            None => (DEFAULT_ADMIN_LISTEN.parse().expect("parses"), 0..0),
            Some(l) => (self.listen_address(l)?, l.span()),
        };
        if data.iter().any(|d| overlaps(*d, addr)) {
            return Err(self.error(span, ErrorKind::AdminOnDataAddress(addr.to_string())));
        }
        let token = section.token.as_ref().map(|t| self.token(t)).transpose()?;
        if !addr.ip().is_loopback() {
            let guard = match token {
                Some(_) => "`/reload` and the drain endpoints ask for `[admin] token`",
                None => {
                    "and so can `/reload` and drain backends: set `[admin] token`, or listen \
                     on loopback"
                }
            };
            let message = format!(
                "the admin listener {addr} is not on loopback: whoever reaches it can read \
                 `/status` and `/metrics`; {guard}"
            );
            self.warnings.borrow_mut().push(self.warning(span, message));
        }
        Ok(AdminConfig {
            listen: addr,
            token,
        })
    }

    /// A bearer token: 16 or more visible ASCII characters, so that it fits
    /// an `Authorization` header as written and is not guessed at once.
    fn token(&self, t: &Spanned<String>) -> Result<String, Box<ConfigError>> {
        let v = t.get_ref();
        if v.len() < 16 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            let fix =
                "16 or more visible ASCII characters, no spaces (e.g. `openssl rand -hex 32`)";
            return Err(self.bad_value(t, "token", fix.into()));
        }
        Ok(v.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(admin: &str) -> Result<crate::config::Config, Box<crate::config::ConfigError>> {
        let text = format!("[admin]\n{admin}\n[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n");
        crate::config::parse_offline(Path::new("t.toml"), &text)
    }

    #[test]
    fn an_admin_listener_off_loopback_is_warned_of() {
        let c = parse("listen = \"127.0.0.1:9901\"").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = parse("listen = \"0.0.0.0:9901\"").unwrap();
        let w = c.warnings[0].to_string();
        assert!(w.contains("t.toml:2:"), "{w}");
        assert!(
            w.contains("not on loopback") && w.contains("set `[admin] token`"),
            "{w}"
        );
        let c = parse("listen = \"0.0.0.0:9901\"\ntoken = \"0123456789abcdef\"").unwrap();
        let w = c.warnings[0].to_string();
        assert!(w.contains("ask for `[admin] token`"), "{w}");
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn a_token_must_be_long_and_visible() {
        for bad in [
            "\"short\"",
            "\"0123456789 abcdef\"",
            "\"0123456789abcdef\\n\"",
        ] {
            let e = parse(&format!("token = {bad}")).unwrap_err().to_string();
            assert!(
                e.contains("t.toml:2:9") && e.contains("16 or more"),
                "{bad}: {e}"
            );
        }
    }
}
