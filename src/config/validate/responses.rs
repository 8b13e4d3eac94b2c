//! What the proxy's own responses say about it: `server_header`.

use toml::Spanned;

use super::super::*;
use super::Source;

impl Source<'_> {
    /// `server_header`: a header value (visible ASCII and inner blanks);
    /// `""` for none.
    pub(super) fn server_header(
        &self,
        value: Option<Spanned<String>>,
    ) -> Result<Option<http::HeaderValue>, Box<ConfigError>> {
        let Some(value) = value else {
            return Ok(Some(http::HeaderValue::from_static(DEFAULT_SERVER_HEADER)));
        };
        let v = value.get_ref();
        if v.is_empty() {
            return Ok(None);
        }
        let trimmed = v.trim_matches([' ', '\t']).len() == v.len();
        let visible = v
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        match http::HeaderValue::from_str(v) {
            Ok(header) if trimmed && visible => Ok(Some(header)),
            _ => {
                let fix = "write visible ASCII such as \"switchyard\" or \"edge/1.2\", \
                           without leading or trailing blanks, or \"\" for no Server header";
                Err(self.bad_value(&value, "server_header", fix.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse_offline, ErrorKind};

    const UPSTREAM: &str = "[upstreams.app]\nbackends = [\"127.0.0.1:3001\"]\n";

    fn server_header(
        line: &str,
    ) -> Result<Option<http::HeaderValue>, Box<crate::config::ConfigError>> {
        let text = format!("[server]\n{line}\n{UPSTREAM}");
        parse_offline(Path::new("proxy.toml"), &text).map(|c| c.server.server_header)
    }

    #[test]
    fn defaults_to_switchyard_and_empty_means_none() {
        assert_eq!(server_header("").unwrap().unwrap(), "switchyard");
        assert_eq!(server_header("server_header = \"\"").unwrap(), None);
        let custom = server_header("server_header = \"edge/1.2 (eu)\"").unwrap();
        assert_eq!(custom.unwrap(), "edge/1.2 (eu)");
    }

    #[test]
    fn refuses_what_is_not_a_header_value_at_its_place() {
        for bad in [
            "\"a\\nb\"",
            "\"x\\u0000\"",
            "\" lead\"",
            "\"trail\\t\"",
            "\"caf\u{e9}\"",
        ] {
            let e = server_header(&format!("server_header = {bad}")).unwrap_err();
            let p = e.position.as_ref().expect("placed");
            assert_eq!((p.line, p.column), (2, 17), "{bad}: {e}");
            assert!(
                matches!(
                    &e.kind,
                    ErrorKind::BadValue {
                        key: "server_header",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        let wrong_type = server_header("server_header = true").unwrap_err();
        assert!(
            matches!(wrong_type.kind, ErrorKind::WrongType { .. }),
            "{wrong_type}"
        );
    }
}
