//! Bearer-token clients from `[[auth.clients]]`, each with its own rate
//! limit. With no clients configured the API is open.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline::rate_limit::RateLimit;
use pipeline::topology::Auth;

use crate::error::ApiError;

/// A known client.
#[derive(Debug)]
pub struct Client {
    /// Name for logs and metrics.
    pub name: String,
    /// Its events-per-second limit, if any.
    limit: Option<RateLimit>,
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

/// The clients, by token.
#[derive(Debug, Default)]
pub struct Clients {
    by_token: HashMap<String, Arc<Client>>,
}

impl Clients {
    /// Clients of the `[auth]` section.
    pub fn new(auth: &Auth) -> Self {
        let by_token = auth
            .clients
            .iter()
            .map(|client| {
                (
                    client.token.clone(),
                    Arc::new(Client { name: client.name.clone(), limit: client.rate_limit.as_ref().map(RateLimit::new) }),
                )
            })
            .collect();
        Clients { by_token }
    }

    /// Whether anyone may call without a token.
    pub fn is_open(&self) -> bool {
        self.by_token.is_empty()
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
        self.by_token.get(token).cloned().map(Some).ok_or(ApiError::Unauthorized)
    }
}
