//! What `switchyard check` says of the names a config follows: each is
//! looked up once, and one that gives no backend now is a warning, not an
//! error. The proxy starts without its backends and follows it; the name
//! may well resolve by then (a Service scaled up, a resolver back).

use crate::config::Config;

use super::resolve::{lookup, resolver, Outcome};

/// One line per followed name that gives no backend now, in config order.
/// Runs its own small runtime: `check` has none.
pub fn check(config: &Config) -> Vec<String> {
    let names: Vec<_> = config
        .upstreams
        .iter()
        .flat_map(|u| u.dns.iter().map(move |d| (u.name.clone(), d.clone())))
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return vec![format!("warning: DNS names not checked: {e}")],
    };
    let settings = config.resolver.clone();
    runtime.block_on(async move {
        let resolver = match resolver(&settings) {
            Ok(r) => r,
            Err(e) => return vec![format!("warning: DNS names not checked: {e}")],
        };
        let servers = settings.nameservers.len().max(1) as u32;
        let limit = settings.timeout.saturating_mul(servers + 1);
        let mut lookups = tokio::task::JoinSet::new();
        for (i, (upstream, dns)) in names.into_iter().enumerate() {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let why = match lookup(&resolver, &dns, limit).await {
                    Outcome::Found { .. } => return None,
                    Outcome::Empty(why) | Outcome::Failed(why) => why,
                };
                let line = format!(
                    "warning: upstream {upstream}: {} gives no backend now ({why}); \
                     Switchyard starts without its backends and fills them when it answers",
                    dns.describe()
                );
                Some((i, line))
            });
        }
        let mut lines: Vec<(usize, String)> =
            lookups.join_all().await.into_iter().flatten().collect();
        lines.sort();
        lines.into_iter().map(|(_, line)| line).collect()
    })
}
