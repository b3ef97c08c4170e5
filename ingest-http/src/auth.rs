//! Bearer-token clients from `[[auth.clients]]`, each with its own rate
//! limit, scopes (write, read, mutate, admin) and, optionally, the only
//! businesses it may touch. With no clients configured the API is open. A
//! presented token is compared with every client's in constant time, and
//! no token is ever printed (not even by `Debug`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use pipeline::rate_limit::RateLimit;
use pipeline::topology::{Auth, RateLimitSpec, Scope};

use crate::error::ApiError;
use crate::text::quoted_list;

/// A known client.
#[derive(Debug)]
pub struct Client {
    /// Name for logs and metrics.
    pub name: String,
    /// Its events-per-second limit, if any.
    limit: Option<RateLimit>,
    /// What the limit was made from.
    spec: Option<RateLimitSpec>,
    /// What it may do.
    scopes: BTreeSet<Scope>,
    /// The only businesses it may touch; `None`: every one.
    businesses: Option<HashSet<String>>,
}

impl Client {
    /// 403 unless the client has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        let has: Vec<&str> = self.scopes.iter().map(|scope| scope.as_str()).collect();
        Err(ApiError::Forbidden(format!("client `{}` may not {}: its scopes are {}", self.name, scope_action(scope), has.join(", "))))
    }

    /// The only businesses the client may touch, if it is limited.
    pub fn businesses(&self) -> Option<&HashSet<String>> {
        self.businesses.as_ref()
    }

    /// 403 naming those of `businesses` the client may not touch.
    pub fn require_businesses<'a>(&self, businesses: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
        let Some(allowed) = &self.businesses else { return Ok(()) };
        let mut refused: Vec<&str> = businesses.into_iter().filter(|business| !allowed.contains(*business)).collect();
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable();
        refused.dedup();
        Err(ApiError::Forbidden(format!("client `{}` may not touch business {}; nothing was done", self.name, quoted_list(&refused))))
    }

    /// 403 if the client is limited to some businesses: for what reaches
    /// every business of a user at once (a clear of everything, the
    /// recording switch).
    pub fn require_every_business(&self, what: &str) -> Result<(), ApiError> {
        match &self.businesses {
            None => Ok(()),
            Some(_) => Err(ApiError::Forbidden(format!(
                "client `{}` is limited to some businesses and may not {what}, which reaches every business of the user",
                self.name
            ))),
        }
    }
}

/// What `scope` lets a client do, for a refusal's message.
fn scope_action(scope: Scope) -> &'static str {
    match scope {
        Scope::Write => "report views (scope `write`)",
        Scope::Read => "read histories (scope `read`)",
        Scope::Mutate => "delete, clear or pause (scope `mutate`)",
        Scope::Admin => "use the operations endpoints (scope `admin`)",
    }
}

impl Client {
    /// Charges `events` to the client's limit: 429 with the wait when it is
    /// exhausted, 413 when the request alone exceeds the client's burst.
    pub fn charge(&self, events: usize) -> Result<(), ApiError> {
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        match limit.try_take(u32::try_from(events).unwrap_or(u32::MAX)) {
            Ok(()) => Ok(()),
            Err(Some(wait)) => Err(ApiError::RateLimited { retry_after_s: wait.as_secs_f64().ceil() as u64 }),
            Err(None) => Err(ApiError::TooLarge(format!(
                "{events} events exceed client `{}`'s burst of {}; send smaller requests",
                self.name,
                limit.burst()
            ))),
        }
    }
}

impl Client {
    /// Charges `units`, or the client's whole burst when that is smaller
    /// (a read that costs more than the burst still passes once it has
    /// the whole of it).
    pub fn charge_within_burst(&self, units: usize) -> Result<(), ApiError> {
        let units = self.limit.as_ref().map_or(units, |limit| units.min(limit.burst() as usize));
        self.charge(units)
    }
}

/// The clients and their tokens.
#[derive(Default)]
pub struct Clients {
    /// (token, client), in `[[auth.clients]]` order.
    tokens: Vec<(Vec<u8>, Arc<Client>)>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: never a token.
        f.debug_list().entries(self.tokens.iter().map(|(_, client)| &client.name)).finish()
    }
}

impl Clients {
    /// Clients of the `[auth]` section.
    pub fn new(auth: &Auth) -> Self {
        let tokens = auth
            .clients
            .iter()
            .map(|client| {
                (
                    client.token.as_bytes().to_vec(),
                    Arc::new(Client {
                        name: client.name.clone(),
                        limit: client.rate_limit.as_ref().map(RateLimit::new),
                        spec: client.rate_limit,
                        scopes: client.effective_scopes().into_iter().collect(),
                        businesses: client.businesses.as_ref().map(|names| names.iter().cloned().collect()),
                    }),
                )
            })
            .collect();
        Clients { tokens }
    }

    /// Takes over `previous`'s client for every token whose client is the
    /// same here (name, rate limit, scopes, businesses), so a reload does
    /// not hand a client a fresh burst.
    pub fn keep_usage_of(&mut self, previous: &Clients) {
        for (token, client) in &mut self.tokens {
            let same = previous.tokens.iter().find(|(known, old)| {
                known == token
                    && old.name == client.name
                    && old.spec == client.spec
                    && old.scopes == client.scopes
                    && old.businesses == client.businesses
            });
            if let Some((_, old)) = same {
                *client = old.clone();
            }
        }
    }

    /// Whether anyone may call without a token.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller with `scope`, from an `Authorization` value: 401 for a
    /// missing or unknown token, 403 for a client without the scope; `None`
    /// when the API is open.
    pub fn admit(&self, authorization: Option<&str>, scope: Scope) -> Result<Option<Arc<Client>>, ApiError> {
        let client = self.authenticate(authorization)?;
        if let Some(client) = &client {
            client.require(scope)?;
        }
        Ok(client)
    }

    /// The caller, from an `Authorization` value (`Bearer <token>`), as
    /// HTTP headers and gRPC metadata carry it; `None` when the API is open.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Arc<Client>>, ApiError> {
        if self.is_open() {
            return Ok(None);
        }
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        // Every token is compared, each in constant time, so the answer's
        // timing says nothing about how close a guess came.
        let mut found = None;
        for (known, client) in &self.tokens {
            if bool::from(known.as_slice().ct_eq(token.as_bytes())) {
                found = Some(client.clone());
            }
        }
        found.map(Some).ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::topology::AuthClient;

    fn clients() -> Clients {
        let client = |name: &str, token: &str| AuthClient {
            name: name.into(),
            token: token.into(),
            rate_limit: None,
            scopes: None,
            businesses: None,
        };
        Clients::new(&Auth {
            clients: vec![client("app", "secret-app-token"), client("admin", "secret-admin-token")],
            allow_unauthenticated: false,
        })
    }

    #[test]
    fn the_right_token_names_its_client_and_any_other_is_refused() {
        let clients = clients();
        let found = clients.authenticate(Some("Bearer secret-admin-token")).unwrap().unwrap();
        assert_eq!(found.name, "admin");
        for wrong in [None, Some("Bearer secret-app-toke"), Some("Bearer secret-app-token2"), Some("secret-app-token"), Some("Bearer ")] {
            assert!(matches!(clients.authenticate(wrong), Err(ApiError::Unauthorized)), "{wrong:?} was accepted");
        }
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let printed = format!("{:?}", clients());
        assert!(printed.contains("app") && !printed.contains("secret"), "{printed}");
    }
}
